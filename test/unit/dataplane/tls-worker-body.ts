import { parentPort, workerData } from "node:worker_threads";
import type { Workload } from "../identity/helpers.js";
import { contextOf, handshakeBoth, liveObjects, readAll, tlsPair } from "./tls-support.js";

/** Runs inside a worker_thread: the data path's TLS on a thread of its own (contexts, ALPN callback, identity). */
const { db, cart } = workerData as { db: Workload; cart: Workload };
const serverCtx = contextOf(db);
const clientCtx = contextOf(cart);
const pair = tlsPair(serverCtx, clientCtx);
const outcome = handshakeBoth(pair);
pair.client.write(Buffer.from("from a worker"));
const result = {
  outcome,
  alpn: [pair.server.alpn(), pair.client.alpn()],
  peer: pair.server.peerIdentity(),
  data: String(readAll(pair.server).data),
  liveDuring: liveObjects(),
};
pair.close();
serverCtx.dispose();
clientCtx.dispose();
parentPort?.postMessage({ ...result, liveAfter: liveObjects() });
