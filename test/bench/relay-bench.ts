/**
 * Relay CPU per request: Node's net.createServer + pipe (js-relay.ts) against ambit's data path v2 relay in a
 * worker thread (dataplane-relay.ts), both in front of a local nginx, loaded by wrk on loopback. Relay CPU is
 * user+sys of the relay process from /proc/PID/stat (worker threads included), divided by the requests wrk
 * completed. Rounds interleave the relays so machine noise hits both. Not part of `make bench` yet.
 *
 *   node dist/test/bench/relay-bench.js [SECONDS=5] [ROUNDS=3]
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { cpuSeconds, fixed, pad, sleep, tempDir } from "./support.js";
import { nginxOkConfig, parseWrk } from "./tools.js";

const execFileP = promisify(execFile);
const NGINX_PORT = 18480;
const RELAYS = {
  "node-pipe": { script: "js-relay.js", port: 18481 },
  "ambit-v2": { script: "dataplane-relay.js", port: 18482 },
};
type Relay = keyof typeof RELAYS;

const seconds = Number(process.argv[2] ?? 5);
const rounds = Number(process.argv[3] ?? 3);

async function waitReady(child: ChildProcess, what: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on("data", (chunk: Buffer) => {
      if (chunk.toString().includes("ready")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`${what} exited with ${code}`)));
  });
}

async function load(port: number, close: boolean): Promise<{ requests: number; rps: number; errors: string }> {
  const args = ["-t1", "-c16", `-d${seconds}s`, "--latency"];
  if (close) args.push("-H", "Connection: close");
  const { stdout } = await execFileP("wrk", [...args, `http://127.0.0.1:${port}/`], { timeout: (seconds + 30) * 1000 });
  return parseWrk(stdout);
}

const tmp = tempDir("relay");
const children: ChildProcess[] = [];
try {
  mkdirSync(join(tmp.dir, "body"));
  writeFileSync(join(tmp.dir, "nginx.conf"), nginxOkConfig(tmp.dir, NGINX_PORT));
  const nginx = spawn("nginx", ["-e", "stderr", "-p", tmp.dir, "-c", join(tmp.dir, "nginx.conf")], {
    stdio: "inherit",
  });
  children.push(nginx);
  const pids = {} as Record<Relay, number>;
  for (const [name, relay] of Object.entries(RELAYS) as [Relay, (typeof RELAYS)[Relay]][]) {
    const child = spawn(
      process.execPath,
      [new URL(relay.script, import.meta.url).pathname, `127.0.0.1:${relay.port}=127.0.0.1:${NGINX_PORT}`],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    children.push(child);
    if (name === "ambit-v2") await waitReady(child, name);
    else await sleep(500);
    pids[name] = child.pid as number;
  }
  await sleep(300);
  const rows: string[] = [];
  for (let round = 1; round <= rounds; round++) {
    for (const close of [false, true]) {
      for (const name of Object.keys(RELAYS) as Relay[]) {
        const before = cpuSeconds(pids[name]);
        const r = await load(RELAYS[name].port, close);
        const cpu = cpuSeconds(pids[name]) - before;
        const perRequestUs = (cpu / r.requests) * 1e6;
        rows.push(
          `${pad(String(round), 5)} ${pad(close ? "close" : "keep-alive", 10)} ${pad(name, 9)} ${pad(fixed(r.rps, 0), 9)} ${pad(fixed(perRequestUs, 1), 12)}  ${r.errors}`,
        );
      }
    }
  }
  console.log(`${pad("round", 5)} ${pad("mode", 10)} ${pad("relay", 9)} ${pad("req/s", 9)} ${pad("CPU µs/req", 12)}`);
  console.log(rows.join("\n"));
} finally {
  for (const child of children.reverse()) child.kill("SIGTERM");
  await sleep(500);
  tmp.remove();
}
