/**
 * Issue target: "10,000 concurrent connections through one agent pair, then back to the idle fd count and RSS
 * within 10%". Real `ambit agent` processes (one per node, in the node's namespace, 2 data-plane workers each, the
 * image's node flags), so their descriptors and resident memory are read from /proc without the test's own sockets
 * mixed in; the app is a process of its own in pod b for the same reason, and for the descriptor limit.
 */
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync } from "node:fs";
import type net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test, { type ExecutionContext } from "ava";
import { AGENT_NODE_FLAGS } from "../../agent/node/runtime-flags.js";
import type { SimCluster, SimNode, SimPod } from "../../agent/sim/index.js";
import { openNetns } from "../../native-bindings/netns.js";
import { closeFdQuietly, connectInNetns, connectInNetnsFd } from "../../native-bindings/sockets.js";
import { captureOutput, sleep, waitFor } from "../bench/support.js";
import { localAgentArgs } from "./support/agent-args.js";
import { clusterFor } from "./support/cluster.js";
import type { AppStatus } from "./support/hold-app.js";
import { ruleCount } from "./support/nft.js";
import { request } from "./support/sockets.js";

const meshed = { "ambit.dev/mesh": "enabled" };
const CLI = join(process.cwd(), "dist/agent/cli.js");
const HOLD_APP = join(import.meta.dirname, "support", "hold-app.js");
const CONNECTIONS = 10_000;
const APP_PORT = 8080;
const WORKERS = 2;
/**
 * Client pods on n1, all talking to b on n2. A worker pools one HBONE session per source pod, and n2's workers
 * share b's HBONE listener: a whole session, with every stream it carries, lands on whichever n2 worker accepts it
 * first. With one client pod there are two sessions (one per n1 worker), and in 16 trials both went to the same n2
 * worker 10 times. Six pods make twelve sessions: all on one worker is a 1-in-2048 draw even for a fair coin.
 */
const CLIENT_PODS = 6;
/** Each agent's metrics server, on the loopback of its own node namespace (nothing else listens there). */
const METRICS_PORT = 15020;
/**
 * Connections being opened at once. The agent's outbound listeners have a 4096 backlog; a client that connects
 * faster than the workers accept overflows it and waits for a SYN retransmit (1 s, then 3 s...) for nothing.
 */
const OPENING = 500;
/** The bound: fds and RSS back within 10% of the idle figures. */
const TOLERANCE = 0.1;
/** Connections closed, and their descriptors released, within this (~1-7 s seen, most of it the test's own loop). */
const CLOSE_MS = 30_000;
/**
 * RSS back within 10% of idle within this. What stays resident after the close is V8 heap, garbage that no full
 * collection has taken yet: the held connections' objects were promoted to old space, and with the agent idle no
 * allocation starts a mark-compact. V8's memory reducer then waits for a low allocation rate, judged on samples
 * that still include the load, or for its watchdog, 100 s after the isolate's last mark-compact; it checks every
 * 8 s. Measured (--trace-gc --trace-gc-verbose): "high alloc ... waiting for 8000 ms" for 80-100 s after the close,
 * then "Mark-Compact (reduce)" on each isolate (main thread 22.6 (50.7) -> 10.9 (16.3) MB, busy worker 19.1 (31.8)
 * -> 8.3 (15.1) MB), and RSS fell from 180 MiB to 102-110 MiB against 105 MiB idle; 30 s after the close it had
 * not moved. Back within 10% 84-100 s after the close in 4 runs of this test. --optimize-for-size does not help
 * (its reducer had spent its GCs during the load: 125 vs 94 MiB idle, 120 s after). So the bound is the watchdog
 * plus a timer period and slack for a loaded machine.
 */
const RSS_MS = 130_000;
/** This test's client sockets plus the runtime's own (the app's ends are in its own process). */
const FDS_NEEDED = CONNECTIONS + 1000;

interface Agent {
  node: SimNode;
  child: ChildProcess;
  output: () => string;
}

interface Usage {
  fds: number;
  rssMiB: number;
}

function usage(pid: number): Usage {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const rssKiB = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]);
  return { fds: readdirSync(`/proc/${pid}/fd`).length, rssMiB: rssKiB / 1024 };
}

const show = (u: Usage) => `${u.fds} fds, ${u.rssMiB.toFixed(1)} MiB`;
const within = (now: Usage, idle: Usage, what: keyof Usage) => now[what] <= idle[what] * (1 + TOLERANCE);

function openFileLimit(): number {
  const line = readFileSync("/proc/self/limits", "utf8")
    .split("\n")
    .find((l) => l.startsWith("Max open files"));
  return Number(line?.split(/\s+/)[3]);
}

/**
 * The agent's Prometheus samples, fetched from inside its node namespace (HTTP/1.0: the server closes when done),
 * keyed by `name{labels}`.
 */
async function scrape(node: SimNode): Promise<Map<string, number>> {
  const s = await connectInNetns(node.netnsPath, {
    address: "127.0.0.1",
    port: METRICS_PORT,
    mark: 0,
    timeoutMs: 5000,
  });
  const text = await new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.setTimeout(10_000, () => s.destroy(new Error(`metrics of ${node.name}: no answer in 10 s`)));
    s.on("data", (c: Buffer) => chunks.push(c));
    s.on("error", reject);
    s.on("end", () => {
      s.destroy();
      resolve(Buffer.concat(chunks).toString());
    });
    s.end("GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  });
  const samples = new Map<string, number>();
  for (const line of text.slice(text.indexOf("\r\n\r\n") + 4).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

/** Sum of the samples of `name` whose labels include every `label="value"` given. */
function total(samples: Map<string, number>, name: string, ...labels: string[]): number {
  let sum = 0;
  for (const [key, value] of samples) {
    const brace = key.indexOf("{");
    if ((brace < 0 ? key : key.slice(0, brace)) !== name) continue;
    if (labels.every((l) => key.includes(l))) sum += value;
  }
  return sum;
}

/** A data-plane counter per worker: ambit_dataplane_<name>_total{worker="0".."WORKERS-1"}. */
function perWorker(samples: Map<string, number>, name: string): number[] {
  return Array.from({ length: WORKERS }, (_, w) => total(samples, `ambit_dataplane_${name}_total`, `worker="${w}"`));
}

/** HBONE sessions made (handshakes completed), by the client side and by the server side. */
const SESSIONS: Record<"client" | "server", [string, ...string[]]> = {
  client: ["ambit_tls_handshakes_total", 'role="client"', 'result="ok"'],
  server: ["ambit_tls_handshakes_total", 'role="server"', 'result="ok"'],
};

/** The app in pod b, as its own process (support/hold-app.ts); `status()` asks it what it holds. */
async function startApp(t: ExecutionContext, cluster: SimCluster, b: SimPod) {
  const child = cluster.spawnIn(
    b.netnsName,
    process.execPath,
    [HOLD_APP, b.ipv4, String(APP_PORT), String(CONNECTIONS)],
    {
      stdio: ["ignore", "pipe", "pipe", "ipc"],
    },
  );
  const output = captureOutput(child);
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  const reply = async <T>(what: string): Promise<T> => {
    const [message] = (await Promise.race([
      once(child, "message"),
      once(child, "exit").then(() => {
        throw new Error(`the app exited: ${output()}`);
      }),
      sleep(30_000).then(() => {
        throw new Error(`no ${what} from the app in 30 s: ${output()}`);
      }),
    ])) as [T];
    return message;
  };
  const first = await reply<{ listening?: boolean }>("listening");
  if (!first.listening) throw new Error(`the app said ${JSON.stringify(first)}`);
  return {
    status: (): Promise<AppStatus> => {
      child.send("status");
      return reply<AppStatus>("status");
    },
  };
}

/** Starts the agent of `node` in the node's namespace, as deployed (the image's node flags). */
function startAgent(cluster: SimCluster, node: SimNode, manifests: string, caDir: string): Agent {
  const args = localAgentArgs(node.name, manifests, caDir, WORKERS);
  args[args.indexOf("--metrics") + 1] = `127.0.0.1:${METRICS_PORT}`;
  const child = cluster.spawnIn(node.netnsName, process.execPath, [...AGENT_NODE_FLAGS, CLI, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  return { node, child, output: captureOutput(child) };
}

test("10,000 concurrent connections through one agent pair, then fds and RSS back within 10% of idle", async (t) => {
  t.timeout(240_000);
  const limit = openFileLimit();
  if (limit < FDS_NEEDED) {
    t.fail(`this test holds ${FDS_NEEDED} descriptors; the limit is ${limit} (run it with ulimit -n 65536)`);
    return;
  }
  const started = Date.now();
  let phase = started;
  const lap = (what: string) => {
    const now = Date.now();
    t.log(`${what} (${((now - phase) / 1000).toFixed(1)} s)`);
    phase = now;
  };

  const clientNames = Array.from({ length: CLIENT_PODS }, (_, i) => `a${i}`);
  const cluster = await clusterFor(t, {
    nodes: [
      { name: "n1", pods: clientNames.map((name) => ({ name, labels: meshed })) },
      { name: "n2", pods: [{ name: "b", labels: meshed }] },
    ],
  });
  const sources = clientNames.map((name) => cluster.pod(name));
  const b = cluster.pod("b");
  const app = await startApp(t, cluster, b);
  const dir = mkdtempSync(join(tmpdir(), "ambit-scale-"));
  const manifests = join(dir, "cluster.json");
  await cluster.writeManifests(manifests);
  const agents: Agent[] = [];
  t.teardown(async () => {
    for (const agent of agents) {
      if (agent.child.exitCode !== null || agent.child.signalCode !== null) continue;
      const exited = once(agent.child, "exit");
      agent.child.kill("SIGKILL");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });
  const alive = () => {
    for (const agent of agents) {
      if (agent.child.exitCode !== null || agent.child.signalCode !== null) {
        throw new Error(`agent ${agent.node.name} exited: ${agent.output()}`);
      }
    }
  };
  const enrolled = (pods: SimPod[]) => async () => {
    alive();
    return pods.every((p) => ruleCount(p.netnsPath) > 0);
  };
  // One after the other: the first agent creates the shared local CA.
  agents.push(startAgent(cluster, cluster.node("n1"), manifests, join(dir, "ca")));
  await waitFor("the client pods enrolled", enrolled(sources), 60_000);
  agents.push(startAgent(cluster, cluster.node("n2"), manifests, join(dir, "ca")));
  await waitFor("b enrolled", enrolled([b]), 60_000);
  const [n1, n2] = agents as [Agent, Agent];
  const pids = agents.map((agent) => agent.child.pid as number);
  lap("cluster and agents up");

  // Via the mesh, as direct, the app sees the client pod's address (the agent connects from it, transparently).
  const viaMesh = (i: number, from: string) => `${i} from ${from}\n`;
  // Requests before the 10,000 take indexes above them: the app counts each of 0..9,999 once.
  let extra = CONNECTIONS;
  // Warm-up, in bursts from every client pod until each n1 worker has its pooled session for each pod: the sessions,
  // the lazily loaded code and the first allocations are then part of the idle figure.
  await waitFor(
    "a pooled session per client pod and n1 worker",
    async () => {
      alive();
      const burst = sources.flatMap((pod) => Array.from({ length: 16 }, () => ({ pod, i: extra++ })));
      const replies = await Promise.all(burst.map(({ pod, i }) => request(pod.netnsPath, b.ipv4, APP_PORT, `${i}\n`)));
      if (!replies.every((r, k) => r === viaMesh(burst[k]?.i as number, burst[k]?.pod.ipv4 as string))) return false;
      return total(await scrape(n1.node), ...SESSIONS.client) >= WORKERS * CLIENT_PODS;
    },
    60_000,
  );
  // The pid is node's own once `ip netns exec` has exec'd it (both agents serve now): its /proc figures are the agent's.
  for (const pid of pids) t.is(readlinkSync(`/proc/${pid}/exe`), realpathSync(process.execPath));
  await sleep(2000);
  const idle = pids.map(usage);
  const warm = { n1: await scrape(n1.node), n2: await scrape(n2.node) };
  lap(`warmed up; idle n1 ${show(idle[0] as Usage)}, n2 ${show(idle[1] as Usage)}`);

  // 10,000 connections, OPENING at a time, each sending its index and awaiting the answer, all kept open.
  const netns = sources.map((pod) => openNetns(pod.netnsPath));
  const clients: net.Socket[] = [];
  const clientProblems: string[] = [];
  let closing = 0;
  t.teardown(() => {
    for (const s of clients) s.destroy();
    for (const fd of netns) closeFdQuietly(fd);
  });
  const open = async (i: number): Promise<void> => {
    const from = netns[i % CLIENT_PODS] as number;
    const s = await connectInNetnsFd(from, { address: b.ipv4, port: APP_PORT, mark: 0, timeoutMs: 30_000 });
    clients[i] = s;
    s.setEncoding("latin1");
    let reply = "";
    await new Promise<void>((resolve, reject) => {
      s.setTimeout(30_000, () => reject(new Error(`connection ${i}: no answer in 30 s`)));
      s.on("data", (chunk: string) => {
        reply += chunk;
        if (reply.endsWith("\n")) resolve();
      });
      s.once("error", reject);
      s.once("end", () => reject(new Error(`connection ${i}: ended before its answer (${JSON.stringify(reply)})`)));
      s.write(`${i}\n`);
    });
    s.setTimeout(0);
    if (reply !== viaMesh(i, sources[i % CLIENT_PODS]?.ipv4 as string))
      throw new Error(`connection ${i}: answered ${JSON.stringify(reply)}`);
    // From now on the connection may only end when the test ends it.
    s.on("error", (err: Error) => clientProblems.push(`connection ${i}: ${err.message}`));
    s.once("end", () => {
      if (!closing) clientProblems.push(`connection ${i}: ended by the other side while held`);
    });
  };
  let next = 0;
  const opener = async () => {
    while (next < CONNECTIONS) await open(next++);
  };
  await Promise.all(Array.from({ length: OPENING }, opener));
  const peak = pids.map(usage);
  const held = await app.status();
  lap(
    `${CONNECTIONS} connections opened and answered; peak n1 ${show(peak[0] as Usage)}, n2 ${show(peak[1] as Usage)}`,
  );
  t.is(held.open, CONNECTIONS, "the app holds every connection at once");
  t.is(held.answered, CONNECTIONS, "each of the 10,000 indexes answered once");
  t.is(clients.filter((s) => !s.destroyed).length, CONNECTIONS, "every client is still connected");
  for (const [i, u] of peak.entries()) {
    // A descriptor per connection in each agent (n1: the client's accepted socket; n2: its socket to the app):
    // the figures are of the processes that carry the traffic.
    t.true(u.fds >= (idle[i] as Usage).fds + CONNECTIONS, `agent n${i + 1} holds a descriptor per connection`);
  }

  // Close: every client ends its side, the app answers with its own end, both sides close.
  closing = Date.now();
  for (const s of clients) s.end();
  await waitFor(
    "every connection closed on both sides",
    async () => clients.every((s) => s.closed) && (await app.status()).open === 0,
    CLOSE_MS,
  );
  let after = pids.map(usage);
  while (!after.every((u, i) => within(u, idle[i] as Usage, "fds")) && Date.now() - closing < CLOSE_MS) {
    await sleep(100);
    after = pids.map(usage);
  }
  lap(`closed; n1 ${show(after[0] as Usage)}, n2 ${show(after[1] as Usage)}`);
  for (const [i, u] of after.entries()) {
    const fds = `${(idle[i] as Usage).fds} idle, ${(peak[i] as Usage).fds} peak, ${u.fds} after`;
    t.true(within(u, idle[i] as Usage, "fds"), `n${i + 1} fds back within 10% of idle: ${fds}`);
  }

  // Every connection went through the mesh on the pooled sessions, carried by both workers of each agent, and
  // ended cleanly.
  const mtls = 'connection_security_policy="mutual_tls"';
  const grew = (now: Map<string, number>, before: Map<string, number>, name: string, ...labels: string[]) =>
    total(now, name, ...labels) - total(before, name, ...labels);
  const closedReports = async (agent: Agent, before: Map<string, number>, reporter: string) =>
    grew(await scrape(agent.node), before, "istio_tcp_connections_closed_total", `reporter="${reporter}"`, mtls);
  await waitFor(
    "the agents' connection reports",
    async () =>
      (await closedReports(n1, warm.n1, "source")) === CONNECTIONS &&
      (await closedReports(n2, warm.n2, "destination")) === CONNECTIONS,
    CLOSE_MS,
  );
  for (const [agent, before, reporter, sessions] of [
    [n1, warm.n1, "source", SESSIONS.client],
    [n2, warm.n2, "destination", SESSIONS.server],
  ] as const) {
    const now = await scrape(agent.node);
    const name = agent.node.name;
    const delta = (metric: string) => perWorker(now, metric).map((v, w) => v - (perWorker(before, metric)[w] ?? 0));
    t.is(
      grew(now, before, "istio_tcp_connections_opened_total", `reporter="${reporter}"`, mtls),
      CONNECTIONS,
      `${name}: every connection opened over HBONE (mutual TLS)`,
    );
    t.is(grew(now, before, ...sessions), 0, `${name}: no new session, the pooled ones carried every stream`);
    const sent = delta("stream_sent_bytes");
    const received = delta("stream_received_bytes");
    t.log(`${name} per worker: stream bytes sent ${sent.join("/")}, received ${received.join("/")}`);
    t.true(sent.every((n) => n > 0) && received.every((n) => n > 0), `${name}: both workers relayed`);
    for (const counter of ["connections_reset", "connect_failures", "connect_timeouts", "socket_failures"]) {
      t.deepEqual(delta(counter), [0, 0], `${name}: no ${counter}`);
    }
    t.is(grew(now, before, "ambit_connections_refused_total"), 0, `${name}: nothing refused`);
  }
  t.deepEqual(clientProblems, []);
  t.deepEqual((await app.status()).problems, []);
  lap("metrics checked");

  while (!after.every((u, i) => within(u, idle[i] as Usage, "rssMiB")) && Date.now() - closing < RSS_MS) {
    await sleep(1000);
    after = pids.map(usage);
  }
  lap(
    `RSS settled after ${((Date.now() - closing) / 1000).toFixed(0)} s; n1 ${show(after[0] as Usage)}, n2 ${show(after[1] as Usage)}`,
  );
  for (const [i, u] of after.entries()) {
    const rss = `${show(idle[i] as Usage)} idle, ${show(peak[i] as Usage)} peak, ${show(u)} after`;
    t.true(within(u, idle[i] as Usage, "rssMiB"), `n${i + 1} RSS back within 10% of idle: ${rss}`);
  }
  t.log(`whole test ${((Date.now() - started) / 1000).toFixed(1)} s`);
});
