/**
 * How two data-plane workers share one relay listener: one fd shared by both workers' epoll sets (EPOLLEXCLUSIVE,
 * DataplaneWorkerPool) against one SO_REUSEPORT listener per worker, with one worker as the reference. Each relay
 * (dataplane-pool-relay.ts) sits in front of a local nginx, loaded by wrk -t2 on loopback, keep-alive and
 * Connection: close, 16 and 64 connections. Per run: requests/s, relay CPU (user+sys of the process, all threads)
 * per request, the split of connections between the workers (relay stats: opened), the CPU of the two busiest
 * threads (the workers), each worker's loop wake-ups and how many found no event (woken for a connection another
 * worker took), and accepts that found the queue empty.
 * Rounds interleave the relays so machine noise hits all of them; the load average is printed with each round.
 *
 * Then whether every worker wakes for each connection (herdProbe), and what a SO_REUSEPORT group does with the connections queued on a member that closes (a worker or pod
 * leaving): QUEUED clients connect to two members nobody accepts from, member 1 closes, member 2 accepts.
 *
 * Not part of `make bench`:
 *   node dist/test/bench/spread-bench.js [SECONDS=5] [ROUNDS=3]
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { loadavg } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { WorkerStats } from "../../agent/dataplane/worker-protocol.js";
import { accept, closeFd, EAGAIN } from "../../native-bindings/io.js";
import { openListenerFd } from "../../native-bindings/sockets.js";
import { cpuSeconds, fixed, pad, sleep, tempDir } from "./support.js";
import { nginxOkConfig, parseWrk } from "./tools.js";

const execFileP = promisify(execFile);
const NGINX_PORT = 18490;
const RELAYS = {
  "1-worker": { workers: 1, mode: "shared", port: 18491 },
  "2-shared": { workers: 2, mode: "shared", port: 18492 },
  "2-reuseport": { workers: 2, mode: "reuseport", port: 18493 },
};
type RelayName = keyof typeof RELAYS;
const LOADS = [
  { name: "keep-alive", connections: 16, close: false },
  { name: "keep-alive", connections: 64, close: false },
  { name: "close", connections: 16, close: true },
  { name: "close", connections: 64, close: true },
];
const QUEUED = 200;
const PROBES = 200;

const seconds = Number(process.argv[2] ?? 5);
const rounds = Number(process.argv[3] ?? 3);

interface Relay {
  child: ChildProcess;
  pid: number;
  stats(): Promise<WorkerStats[]>;
}

async function startRelay(name: RelayName): Promise<Relay> {
  const { workers, mode, port } = RELAYS[name];
  const child = spawn(
    process.execPath,
    [
      new URL("dataplane-pool-relay.js", import.meta.url).pathname,
      `127.0.0.1:${port}=127.0.0.1:${NGINX_PORT}`,
      String(workers),
      mode,
    ],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  const lines: string[] = [];
  const waiters: ((line: string) => void)[] = [];
  let partial = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    const parts = (partial + chunk.toString()).split("\n");
    partial = parts.pop() ?? "";
    for (const line of parts) {
      const waiter = waiters.shift();
      if (waiter) waiter(line);
      else lines.push(line);
    }
  });
  const next = () =>
    new Promise<string>((resolve) => {
      const line = lines.shift();
      if (line !== undefined) resolve(line);
      else waiters.push(resolve);
    });
  const ready = await Promise.race([next(), once(child, "exit").then(([code]) => `exited with ${code}`)]);
  if (ready !== "ready") throw new Error(`relay ${name}: ${ready}`);
  return {
    child,
    pid: child.pid as number,
    async stats() {
      child.stdin?.write("stats\n");
      return JSON.parse(await next()) as WorkerStats[];
    },
  };
}

/** Voluntary context switches (times it slept and was woken) of every thread of `pid`, by thread id. */
function threadWakeups(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8");
      out.set(Number(tid), Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1]));
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out;
}

/**
 * Does every worker wake for a connection only one of them accepts? PROBES connections, one at a time, to an idle
 * relay (opened, then closed by the client once connected): per worker, connections opened and loop wake-ups
 * (empty ones in brackets), and the two threads that woke most (the workers; the main thread sleeps).
 */
async function herdProbe(name: RelayName, relay: Relay): Promise<string> {
  const statsBefore = await relay.stats();
  const threadsBefore = threadWakeups(relay.pid);
  for (let i = 0; i < PROBES; i++) {
    const client = net.connect({ host: "127.0.0.1", port: RELAYS[name].port });
    client.on("error", () => {});
    await once(client, "connect");
    await sleep(5);
    client.destroy();
    await sleep(5);
  }
  await sleep(200);
  const threads = [...threadWakeups(relay.pid)]
    .map(([tid, n]) => n - (threadsBefore.get(tid) ?? 0))
    .sort((a, b) => b - a)
    .slice(0, 2);
  const split = delta(await relay.stats(), statsBefore);
  return `herd probe ${pad(name, 11)}: ${PROBES} sequential connections; opened per worker ${split.map((w) => w.opened).join("/")}, loop wake-ups (empty) ${split.map((w) => `${w.wakeups} (${w.emptyWakeups})`).join(" / ")}, thread wake-ups of the two busiest threads ${threads.join("/")}`;
}

/** CPU seconds of every thread of `pid`, by thread id. */
function threadCpu(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out.set(Number(tid), (Number(fields[11]) + Number(fields[12])) / 100);
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out;
}

async function wrk(port: number, connections: number, close: boolean) {
  const args = ["-t2", `-c${connections}`, `-d${seconds}s`];
  if (close) args.push("-H", "Connection: close");
  const { stdout } = await execFileP("wrk", [...args, `http://127.0.0.1:${port}/`], { timeout: (seconds + 30) * 1000 });
  return parseWrk(stdout);
}

/** Field-wise difference of two workers' stats snapshots, for the figures this bench prints. */
function delta(after: WorkerStats[], before: WorkerStats[]) {
  return after.map((a, i) => {
    const b = before[i] as WorkerStats;
    return {
      opened: a.relay.opened - b.relay.opened,
      wakeups: a.reactor.wakeups - b.reactor.wakeups,
      emptyWakeups: a.reactor.emptyWakeups - b.reactor.emptyWakeups,
      acceptEmpty: a.listener.acceptEmpty - b.listener.acceptEmpty,
    };
  });
}

/**
 * SO_REUSEPORT member close: QUEUED connections to a group of two listeners nobody accepts from, then member 1 is
 * closed and member 2 accepts what it can. Returns how many clients were reset and how many member 2 accepted.
 */
async function reuseportMemberClose(): Promise<{ reset: number; accepted: number; other: number }> {
  const port = 18494;
  const members = [0, 1].map(() => openListenerFd({ address: "127.0.0.1", port, backlog: 4096, reusePort: true }));
  const clients = await Promise.all(
    Array.from({ length: QUEUED }, async () => {
      const client = net.connect({ host: "127.0.0.1", port });
      const ended = new Promise<string>((resolve) => {
        client.on("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? "error"));
        client.on("close", () => resolve("closed"));
      });
      await once(client, "connect");
      return { client, ended };
    }),
  );
  closeFd(members[0] as number);
  let accepted = 0;
  const survivors: number[] = [];
  for (;;) {
    const fd = accept(members[1] as number, null);
    if (fd === -EAGAIN) break;
    if (fd >= 0) {
      accepted++;
      survivors.push(fd);
    }
  }
  const outcome = await Promise.all(clients.map((c) => Promise.race([c.ended, sleep(1000).then(() => "open")])));
  for (const fd of survivors) closeFd(fd);
  closeFd(members[1] as number);
  for (const c of clients) c.client.destroy();
  const reset = outcome.filter((o) => o === "ECONNRESET").length;
  return { reset, accepted, other: QUEUED - reset - accepted };
}

const tmp = tempDir("spread");
const children: ChildProcess[] = [];
try {
  mkdirSync(join(tmp.dir, "body"));
  writeFileSync(join(tmp.dir, "nginx.conf"), nginxOkConfig(tmp.dir, NGINX_PORT));
  children.push(
    spawn("nginx", ["-e", "stderr", "-p", tmp.dir, "-c", join(tmp.dir, "nginx.conf")], { stdio: "inherit" }),
  );
  const relays = {} as Record<RelayName, Relay>;
  for (const name of Object.keys(RELAYS) as RelayName[]) {
    relays[name] = await startRelay(name);
    children.push(relays[name].child);
  }
  await sleep(500);
  console.log(
    `${pad("round", 5)} ${pad("load", 10)} ${pad("conns", 5)} ${pad("relay", 11)} ${pad("req/s", 8)} ${pad("CPU µs/req", 10)} ${pad("conns per worker", 16)} ${pad("busiest threads CPU s", 21)} ${pad("wake-ups (empty)", 26)} ${pad("accept empty", 12)}  load avg`,
  );
  for (let round = 1; round <= rounds; round++) {
    for (const load of LOADS) {
      for (const name of Object.keys(RELAYS) as RelayName[]) {
        const relay = relays[name];
        const statsBefore = await relay.stats();
        const threadsBefore = threadCpu(relay.pid);
        const cpuBefore = cpuSeconds(relay.pid);
        const r = await wrk(RELAYS[name].port, load.connections, load.close);
        const cpu = cpuSeconds(relay.pid) - cpuBefore;
        const threads = [...threadCpu(relay.pid)]
          .map(([tid, s]) => s - (threadsBefore.get(tid) ?? 0))
          .sort((a, b) => b - a)
          .slice(0, 2);
        const split = delta(await relay.stats(), statsBefore);
        console.log(
          `${pad(String(round), 5)} ${pad(load.name, 10)} ${pad(String(load.connections), 5)} ${pad(name, 11)} ${pad(fixed(r.rps, 0), 8)} ${pad(fixed((cpu / r.requests) * 1e6, 1), 10)} ${pad(split.map((w) => w.opened).join("/"), 16)} ${pad(threads.map((s) => fixed(s, 2)).join("/"), 21)} ${pad(split.map((w) => `${w.wakeups} (${w.emptyWakeups})`).join(" / "), 26)} ${pad(split.map((w) => w.acceptEmpty).join("/"), 12)}  ${fixed(loadavg()[0] ?? 0, 2)} ${r.errors}`,
        );
      }
    }
  }
  for (const name of Object.keys(RELAYS) as RelayName[]) console.log(await herdProbe(name, relays[name]));
  for (let i = 1; i <= 3; i++) {
    const m = await reuseportMemberClose();
    console.log(
      `SO_REUSEPORT member close, ${QUEUED} queued connections over 2 members, member 1 closed: ${m.reset} reset, ${m.accepted} accepted by member 2, ${m.other} other`,
    );
  }
} finally {
  for (const child of children.reverse()) child.kill("SIGTERM");
  await sleep(500);
  tmp.remove();
}
