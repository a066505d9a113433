/**
 * ambit's data path v2 as a bare relay, for relay-bench: one DataplaneWorker (a Reactor in a worker thread)
 * serving a listener opened on the main thread, relaying to TARGET. Runs until SIGTERM, then stops the worker.
 *
 *   dataplane-relay LISTEN_HOST:PORT=TARGET_HOST:PORT
 */
import { DataplaneWorker } from "../../agent/dataplane/worker-handle.js";
import { openListenerFd } from "../../native-bindings/sockets.js";
import { parseEndpoint } from "./tools.js";

const [from, to] = (process.argv[2] ?? "").split("=");
if (!from || !to) throw new Error("usage: dataplane-relay LISTEN_HOST:PORT=TARGET_HOST:PORT");
const worker = new DataplaneWorker();
await worker.serve(openListenerFd({ ...parseEndpoint(from), backlog: 4096 }), parseEndpoint(to));
process.stdout.write("ready\n");
process.once("SIGTERM", async () => {
  process.exitCode = await worker.stop();
});
