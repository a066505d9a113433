import { once } from "node:events";
import { Worker } from "node:worker_threads";
import test from "ava";
import { issue, newCa, sid } from "../identity/helpers.js";
import { contextOf, handshakeBoth, liveObjects, openFds, tlsPair } from "./tls-support.js";

test("TLS in a worker thread while the main thread holds its own connections: each thread's ALPN callback and counts are its own", async (t) => {
  const ca = await newCa();
  const [db, cart] = await Promise.all([issue(ca, sid("shop", "db")), issue(ca, sid("shop", "cart"))]);
  const fds = openFds();
  // The main thread registers its own callback first; the worker must get one of its own, not call this one.
  const serverCtx = contextOf(db);
  const clientCtx = contextOf(cart);
  const pair = tlsPair(serverCtx, clientCtx);
  const worker = new Worker(new URL("./tls-worker-body.js", import.meta.url), { workerData: { db, cart } });
  // Listen for the exit first: a worker that ends before its message is read emits both in one turn.
  const exited = once(worker, "exit");
  const [fromWorker] = await once(worker, "message");
  t.deepEqual(handshakeBoth(pair), { server: { step: "done" }, client: { step: "done" } });
  t.is(pair.server.alpn(), "h2");
  t.deepEqual(liveObjects(), { contexts: 2, connections: 2 });
  pair.close();
  serverCtx.dispose();
  clientCtx.dispose();
  await exited;

  t.deepEqual(fromWorker.outcome, { server: { step: "done" }, client: { step: "done" } });
  t.deepEqual(fromWorker.alpn, ["h2", "h2"]);
  t.deepEqual(fromWorker.peer, { ok: true, id: sid("shop", "cart") });
  t.is(fromWorker.data, "from a worker");
  t.deepEqual(fromWorker.liveDuring, { contexts: 2, connections: 2 }, "the worker counts only its own objects");
  t.deepEqual(fromWorker.liveAfter, { contexts: 0, connections: 0 });
  t.deepEqual(liveObjects(), { contexts: 0, connections: 0 });
  t.deepEqual(openFds(), fds);
});
