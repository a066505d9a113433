/**
 * A focused measure of ambit's own HTTP/2 over Node sockets, without TLS, nginx or the proxy: a client and a server
 * H2Session in this one process over loopback TCP. Its CPU time (user + sys, printed at the end) is the session's
 * cost plus Node's socket layer, so two builds of agent/h2 compare on the same machine by running this under each.
 *
 *   node dist/test/bench/h2-session-bench.js bulk [MiB]       one CONNECT stream carries MiB (default 1024) up
 *   node dist/test/bench/h2-session-bench.js streams [COUNT]  COUNT (default 100000) CONNECT streams, 64 concurrent,
 *                                                             each: answer 200, 100 bytes each way, half-close both
 */
import net from "node:net";
import { H2Session } from "../../agent/h2/session.js";
import type { H2Stream } from "../../agent/h2/stream.js";
import { bulk, H2_BENCH_SETTINGS, type Pair, streams } from "./h2-workloads.js";

const settings = H2_BENCH_SETTINGS;

async function pair(onStream: (stream: H2Stream) => void): Promise<Pair> {
  let server: H2Session | undefined;
  const listener = net.createServer({ noDelay: true }, (sock) => {
    server = new H2Session(sock, { role: "server", settings });
    server.on("stream", onStream);
  });
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const sock = net.connect({ port: (listener.address() as net.AddressInfo).port, host: "127.0.0.1", noDelay: true });
  await new Promise<void>((resolve) => sock.once("connect", resolve));
  const client = new H2Session(sock, { role: "client", settings });
  return {
    client,
    close: () => {
      client.destroy();
      server?.destroy();
      listener.close();
    },
  };
}

const [mode, arg] = process.argv.slice(2);
const before = process.cpuUsage();
const wall = performance.now();
if (mode === "bulk") await bulk(pair, Number(arg ?? 1024));
else if (mode === "streams") await streams(pair, Number(arg ?? 100_000));
else throw new Error("usage: h2-session-bench bulk [MiB] | streams [COUNT]");
const cpu = process.cpuUsage(before);
console.log(
  `${mode}: cpu ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s (user ${(cpu.user / 1e6).toFixed(2)}, sys ` +
    `${(cpu.system / 1e6).toFixed(2)}), wall ${((performance.now() - wall) / 1000).toFixed(2)} s`,
);
