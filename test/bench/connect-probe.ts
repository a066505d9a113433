/**
 * Run inside a pod namespace (ip netns exec) by proxy-bench. Two modes:
 *   latency HOST PORT COUNT WARMUP  N sequential short connections: TCP connect, send an HTTP GET, time to the
 *                                   first response byte; prints {"samples":[ms...]} (warm-up ones dropped).
 *   get HOST PORT PATH              one HTTP GET, prints the response body (used to poll for enrollment).
 */
import { connect } from "node:net";
import { performance } from "node:perf_hooks";

function once(host: string, port: number, path: string): Promise<{ ms: number; body: string }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let first = 0;
    let data = "";
    const sock = connect({ host, port, noDelay: true });
    const timer = setTimeout(() => sock.destroy(new Error("timeout")), 5000);
    sock.on("connect", () => sock.write(`GET ${path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n`));
    sock.on("data", (chunk: Buffer) => {
      if (first === 0) first = performance.now();
      data += chunk.toString("utf8");
    });
    sock.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on("close", () => {
      clearTimeout(timer);
      if (first === 0) reject(new Error("connection closed before any response byte"));
      else resolve({ ms: first - t0, body: data.slice(data.indexOf("\r\n\r\n") + 4) });
    });
  });
}

const [mode, host, portText, arg, warmupText] = process.argv.slice(2);
const port = Number(portText);
if (mode === "latency") {
  const count = Number(arg);
  const warmup = Number(warmupText ?? 0);
  const samples: number[] = [];
  for (let i = 0; i < count + warmup; i++) {
    const r = await once(host as string, port, "/");
    if (i >= warmup) samples.push(r.ms);
  }
  process.stdout.write(`${JSON.stringify({ samples })}\n`);
} else if (mode === "get") {
  process.stdout.write((await once(host as string, port, arg ?? "/")).body);
} else {
  process.stderr.write("usage: connect-probe latency HOST PORT COUNT WARMUP | get HOST PORT PATH\n");
  process.exit(2);
}
