/**
 * ambit's data path v2 relay on N worker threads, for spread-bench: the listener is either one fd shared by every
 * worker (DataplaneWorkerPool, EPOLLEXCLUSIVE) or one SO_REUSEPORT listener per worker, each owned by its worker.
 * Prints "ready"; each "stats" line on stdin is answered with one JSON line: every worker's WorkerStats. Runs until
 * SIGTERM, then stops the workers.
 *
 *   dataplane-pool-relay LISTEN_HOST:PORT=TARGET_HOST:PORT WORKERS shared|reuseport
 */
import { createInterface } from "node:readline";
import { DataplaneWorker } from "../../agent/dataplane/worker-handle.js";
import { DataplaneWorkerPool } from "../../agent/dataplane/worker-pool.js";
import type { WorkerStats } from "../../agent/dataplane/worker-protocol.js";
import { openListenerFd } from "../../native-bindings/sockets.js";
import { parseEndpoint } from "./tools.js";

const [from, to] = (process.argv[2] ?? "").split("=");
const count = Number(process.argv[3] ?? 1);
const mode = process.argv[4] ?? "shared";
if (!from || !to || !(count >= 1) || (mode !== "shared" && mode !== "reuseport")) {
  throw new Error("usage: dataplane-pool-relay LISTEN_HOST:PORT=TARGET_HOST:PORT WORKERS shared|reuseport");
}

let stats: () => Promise<WorkerStats[]>;
let stop: () => Promise<number[]>;
if (mode === "shared") {
  const pool = new DataplaneWorkerPool(count);
  await pool.serve(openListenerFd({ ...parseEndpoint(from), backlog: 4096 }), parseEndpoint(to));
  stats = () => pool.stats();
  stop = () => pool.stop();
} else {
  const workers = Array.from({ length: count }, () => new DataplaneWorker());
  for (const worker of workers) {
    await worker.serve(openListenerFd({ ...parseEndpoint(from), backlog: 4096, reusePort: true }), parseEndpoint(to));
  }
  stats = () => Promise.all(workers.map((worker) => worker.stats()));
  stop = () => Promise.all(workers.map((worker) => worker.stop()));
}
process.stdout.write("ready\n");
const lines = createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  if (line.trim() === "stats") process.stdout.write(`${JSON.stringify(await stats())}\n`);
});
process.once("SIGTERM", async () => {
  lines.close();
  const codes = await stop();
  process.exitCode = codes.every((code) => code === 0) ? 0 : 1;
});
