/**
 * Data-path cost of ambit against no mesh and against the leads' baseline (an nginx stream mTLS tunnel), measured
 * side by side in one simulated 2-node cluster:
 *
 *   n1: client (meshed), dclient (not meshed)        n2: server (meshed), dserver (not meshed)
 *   direct:   dclient -> dserver
 *   nginx:    dclient nginx 127.0.0.1 -> TLS -> dserver nginx -> lo
 *   js-relay: dclient relay 127.0.0.1 -> plain TCP -> dserver relay -> lo (bare Node.js relays, see js-relay.ts:
 *             what Node's own sockets give on this path with ambit's process layout, before any TLS or HTTP/2)
 *   node-h2:  dclient relay 127.0.0.1 -> HTTP/2 CONNECT over one pooled mTLS session (node:http2) -> dserver relay
 *             (node-h2-relay.ts: HBONE's shape on Node's own HTTP/2, re-measuring the choice of ambit's own)
 *   ambit:    client -> server (captured in both pods, HBONE between the two agents, one process per node)
 *
 * Every server pod runs the same apps: iperf3 -s and an nginx serving a tiny static file. Last, the agents are
 * restarted on 2 data-plane workers each and the ambit wrk steps run again, read with each worker's counters.
 */
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { chmodSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { AGENT_NODE_FLAGS } from "../../agent/node/runtime-flags.js";
import { createSimCluster, type SimCluster } from "../../agent/sim/index.js";
import { localAgentArgs } from "../netns/support/agent-args.js";
import { type IdleAgent, measureIdleAgent } from "./idle-agent.js";
import { captureOutput, fixed, pad, ratio, stats, tempDir, waitFor, withCpu } from "./support.js";
import { iperf3, makeTestPki, nginxHttpConfig, probeGet, type WrkResult, wrk } from "./tools.js";

const SECONDS = 5;
const WARMUP_SECONDS = 1;
/** Connect probes run in rounds alternating between the modes, so background load hits them alike. */
const PROBE_ROUNDS = 5;
const PROBES_PER_ROUND = 200;
const PROBE_WARMUP = 20;
const IPERF_PORT = 5201;
const HTTP_PORT = 8080;
const TUNNEL = { iperf: { local: 7002, remote: 7444 }, http: { local: 7003, remote: 7445 } };
const RELAY = { iperf: { local: 7004, remote: 7446 }, http: { local: 7005, remote: 7447 } };
const H2_RELAY = { iperf: { local: 7006 }, http: { local: 7007 }, remote: 7448 };
const MESHED = { "ambit.dev/mesh": "enabled" };
/** The agents' metrics in their node's namespace: a fixed port (the agent's default), so the bench can scrape it. */
const AGENT_METRICS = { host: "127.0.0.1", port: 15020 };
/** Data-plane workers per agent: the first run's (AMBIT_BENCH_WORKERS) and the second run's. */
const WORKERS = Number(process.env.AMBIT_BENCH_WORKERS ?? "1");
const MORE_WORKERS = 2;
/** Issue 12's "1 vs 2 workers": CPU per keep-alive request at most this much above 1 worker's counts as flat... */
const FLAT_CPU = 1.15;
/** ... and a worker carries load when it relays at least this share of its agent's bytes. */
const MIN_SHARE = 0.2;

const CLI = fileURLToPath(new URL("../../agent/cli.js", import.meta.url));
const PROBE = fileURLToPath(new URL("./connect-probe.js", import.meta.url));
const JS_RELAY = fileURLToPath(new URL("./js-relay.js", import.meta.url));
const NODE_H2_RELAY = fileURLToPath(new URL("./node-h2-relay.js", import.meta.url));
const STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so";

type Mode = "direct" | "nginx" | "js-relay" | "node-h2" | "ambit";
const MODES: Mode[] = ["direct", "nginx", "js-relay", "node-h2", "ambit"];
const COMPARED: Mode[] = ["nginx", "js-relay", "node-h2", "ambit"];

interface Target {
  netns: string;
  iperf: { host: string; port: number };
  http: { host: string; port: number };
}

interface ModeResult {
  gbps: number;
  keepAlive: WrkResult;
  close: WrkResult;
  connect: { median: number; p99: number };
  cpu: Record<string, Record<string, number>>;
  /** CPU seconds of the mode's own processes (both tunnel ends, both agents) during each load step. */
  cpuSeconds: Record<string, number>;
}

type WrkStep = "keep-alive" | "new conns";

/** Per data-plane worker (index = worker label) of one agent. */
interface WorkerCounts {
  /** Connections its listeners accepted: app connections on n1 (outbound), HBONE sessions on n2. */
  accepted: number[];
  /** Bytes it relayed between app sockets and HTTP/2 streams, both ways. */
  bytes: number[];
}

/** The ambit run again with MORE_WORKERS workers per agent. */
interface WorkersRun {
  result: ModeResult;
  /** By step, then by node: how much each worker's counters grew during the step. */
  growth: Record<WrkStep, Record<string, WorkerCounts>>;
  /** By node: what each worker's counters reached, from the restart to the end of the run. */
  total: Record<string, WorkerCounts>;
}

class Procs {
  readonly #tail = new Map<string, { child: ChildProcess; output: () => string }>();

  constructor(readonly cluster: SimCluster) {}

  start(name: string, netns: string, cmd: string, args: string[]): ChildProcess {
    const child = this.cluster.spawnIn(netns, cmd, args);
    this.#tail.set(name, { child, output: captureOutput(child) });
    return child;
  }

  pid(name: string): number | undefined {
    return this.#tail.get(name)?.child.pid;
  }

  /** SIGTERM, then SIGKILL if it has not exited within `ms`. Forgotten then: checkAlive stops counting it. */
  async terminate(name: string, ms: number): Promise<void> {
    const child = this.#tail.get(name)?.child;
    this.#tail.delete(name);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), ms);
    await exited;
    clearTimeout(timer);
  }

  /** Throws if any process this bench started has exited (a crashed agent or server makes numbers meaningless). */
  checkAlive(): void {
    for (const [name, { child, output }] of this.#tail) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}); its output:\n${output()}`);
      }
    }
  }
}

function httpConfig(dir: string, www: string): string {
  return nginxHttpConfig(
    dir,
    `server {
    listen ${HTTP_PORT} backlog=4096; root ${www};
    location = /whoami { default_type text/plain; return 200 "$remote_addr"; }
  }`,
  );
}

function tunnelConfig(dir: string, side: "client" | "server", pki: string, serverIp: string): string {
  const servers = Object.values(TUNNEL).map(({ local, remote }, i) => {
    const app = i === 0 ? IPERF_PORT : HTTP_PORT;
    return side === "client"
      ? `server { listen 127.0.0.1:${local} backlog=4096; proxy_pass ${serverIp}:${remote}; proxy_ssl on;
    proxy_ssl_certificate ${pki}/client.crt; proxy_ssl_certificate_key ${pki}/client.key;
    proxy_ssl_trusted_certificate ${pki}/ca.crt; proxy_ssl_verify on; proxy_ssl_name server;
    proxy_ssl_session_reuse on; }`
      : `server { listen ${serverIp}:${remote} ssl backlog=4096; proxy_pass 127.0.0.1:${app};
    ssl_certificate ${pki}/server.crt; ssl_certificate_key ${pki}/server.key;
    ssl_client_certificate ${pki}/ca.crt; ssl_verify_client on; }`;
  });
  return `load_module ${STREAM_MODULE};
daemon off; worker_processes 1; pid ${dir}/nginx.pid; error_log stderr warn;
events { worker_connections 4096; }
stream {
  ${servers.join("\n  ")}
}
`;
}

function writeConf(dir: string, text: string): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, "nginx.conf");
  writeFileSync(path, text);
  return path;
}

/** An agent's flags with its metrics on AGENT_METRICS instead of a free port. */
function fixedMetrics(args: string[]): string[] {
  return args.map((arg, i) => (args[i - 1] === "--metrics" ? `${AGENT_METRICS.host}:${AGENT_METRICS.port}` : arg));
}

async function tableInstalled(cluster: SimCluster, netns: string): Promise<boolean> {
  await cluster.exec(netns, "nft", ["list", "table", "inet", "ambit"], { timeoutMs: 5000 });
  return true;
}

const MISSING: ModeResult = {
  gbps: Number.NaN,
  keepAlive: { rps: Number.NaN, p50Ms: Number.NaN, p99Ms: Number.NaN, requests: 0, errors: "" },
  close: { rps: Number.NaN, p50Ms: Number.NaN, p99Ms: Number.NaN, requests: 0, errors: "" },
  connect: { median: Number.NaN, p99: Number.NaN },
  cpu: {},
  cpuSeconds: {},
};

const httpUrl = (target: Target) => `http://${target.http.host}:${target.http.port}/index.html`;

/**
 * A load step runner: runs a step while accounting the CPU of the mode's processes, and records in `into` their
 * share of a core and the CPU seconds they spent, under the step's name.
 */
function cpuSteps(
  procs: Procs,
  cpuOf: Record<string, number | undefined>,
  into: Pick<ModeResult, "cpu" | "cpuSeconds">,
): <T>(name: string, fn: () => Promise<T>) => Promise<T> {
  return async (name, fn) => {
    const r = await withCpu(cpuOf, fn);
    into.cpu[name] = r.cpu;
    into.cpuSeconds[name] = Object.keys(cpuOf).reduce((sum, p) => sum + ((r.cpu[p] ?? Number.NaN) * r.wall) / 100, 0);
    procs.checkAlive();
    return r.result;
  };
}

async function measure(
  cluster: SimCluster,
  procs: Procs,
  target: Target,
  cpuOf: Record<string, number | undefined>,
): Promise<ModeResult> {
  const url = httpUrl(target);
  const r: ModeResult = { ...MISSING, cpu: {}, cpuSeconds: {} };
  const step = cpuSteps(procs, cpuOf, r);
  await wrk(cluster, target.netns, url, { seconds: WARMUP_SECONDS });
  r.gbps = await step("iperf3", () => iperf3(cluster, target.netns, target.iperf.host, target.iperf.port, SECONDS));
  r.keepAlive = await step("keep-alive", () => wrk(cluster, target.netns, url, { seconds: SECONDS }));
  r.close = await step("new conns", () => wrk(cluster, target.netns, url, { seconds: SECONDS, close: true }));
  return r;
}

/** Each data-plane worker's counters now, scraped from the agent's metrics in its node's namespace. */
async function workerCounts(cluster: SimCluster, netns: string): Promise<WorkerCounts> {
  const text = await probeGet(cluster, netns, AGENT_METRICS.host, AGENT_METRICS.port, "/metrics");
  const byWorker = (counter: string) => {
    const values: number[] = [];
    const series = new RegExp(`^ambit_dataplane_${counter}_total\\{worker="(\\d+)"\\} (\\S+)$`, "gm");
    for (const [, worker, value] of text.matchAll(series)) values[Number(worker)] = Number(value);
    if (values.length === 0) throw new Error(`no ambit_dataplane_${counter}_total series in the agent's metrics`);
    return Array.from(values, (v) => v ?? 0);
  };
  const sent = byWorker("stream_sent_bytes");
  const received = byWorker("stream_received_bytes");
  return { accepted: byWorker("connections_accepted"), bytes: sent.map((v, i) => v + (received[i] ?? 0)) };
}

function countsGrowth(before: WorkerCounts, after: WorkerCounts): WorkerCounts {
  const minus = (a: number[], b: number[]) => a.map((v, i) => v - (b[i] ?? 0));
  return { accepted: minus(after.accepted, before.accepted), bytes: minus(after.bytes, before.bytes) };
}

/** Counters of every agent (by node name), read side by side. */
async function agentCounts(cluster: SimCluster, nodes: string[]): Promise<Record<string, WorkerCounts>> {
  const counts = await Promise.all(nodes.map((n) => workerCounts(cluster, cluster.node(n).netnsName)));
  return Object.fromEntries(nodes.map((n, i) => [n, counts[i] as WorkerCounts]));
}

/**
 * The ambit wrk steps on the running agents (restarted with MORE_WORKERS), each step between two reads of every
 * worker's counters. The reads are outside the CPU accounting: a scrape costs the agent's main thread CPU the
 * 1-worker run did not spend. No iperf3: a single stream is one connection, on one worker whatever their number.
 */
async function measureWorkers(
  cluster: SimCluster,
  procs: Procs,
  target: Target,
  cpuOf: Record<string, number | undefined>,
  nodes: string[],
): Promise<WorkersRun> {
  const url = httpUrl(target);
  const result: ModeResult = { ...MISSING, cpu: {}, cpuSeconds: {} };
  const step = cpuSteps(procs, cpuOf, result);
  const growth = {} as WorkersRun["growth"];
  const counted = async (name: WrkStep, close: boolean) => {
    const before = await agentCounts(cluster, nodes);
    const r = await step(name, () => wrk(cluster, target.netns, url, { seconds: SECONDS, close }));
    const after = await agentCounts(cluster, nodes);
    growth[name] = Object.fromEntries(
      nodes.map((n) => [n, countsGrowth(before[n] as WorkerCounts, after[n] as WorkerCounts)]),
    );
    return r;
  };
  await wrk(cluster, target.netns, url, { seconds: WARMUP_SECONDS });
  result.keepAlive = await counted("keep-alive", false);
  result.close = await counted("new conns", true);
  return { result, growth, total: await agentCounts(cluster, nodes) };
}

/** One round of sequential connect + first-byte probes from a mode's client pod; milliseconds. */
async function probeRound(cluster: SimCluster, target: Target): Promise<number[]> {
  const { stdout } = await cluster.exec(
    target.netns,
    process.execPath,
    [PROBE, "latency", target.http.host, String(target.http.port), String(PROBES_PER_ROUND), String(PROBE_WARMUP)],
    { timeoutMs: 120_000 },
  );
  return (JSON.parse(stdout) as { samples: number[] }).samples;
}

/** An error's message and its causes' (waitFor's timeout says what it waited for, its cause why it never came). */
function causes(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  return err.cause === undefined ? err.message : `${err.message}; cause: ${causes(err.cause)}`;
}

function loadAverage(): string {
  return loadavg()
    .map((v) => v.toFixed(2))
    .join(" ");
}

/** CPU microseconds the mode's processes spent per request (or per new connection) of a wrk step. */
function cpuPerRequest(r: ModeResult, step: "keep-alive" | "new conns"): number {
  const done = step === "keep-alive" ? r.keepAlive.requests : r.close.requests;
  return ((r.cpuSeconds[step] ?? Number.NaN) / done) * 1e6;
}

/**
 * Issue 12's targets, each with ambit's figure, what it is compared with, and PASS/MISSED. Ratios come from this
 * run only; "n/a" means a reference could not be measured here (the nginx baseline needs its stream module).
 */
function targets(
  results: Record<Mode, ModeResult>,
  idle: IdleAgent | undefined,
  workers: WorkersRun | string,
): string[] {
  const { direct: d, nginx: n, ambit: a } = results;
  const verdict = (ok: boolean | undefined) => (ok === undefined ? "n/a" : ok ? "PASS" : "MISSED");
  const known = (...xs: number[]) => xs.every(Number.isFinite);
  const row = (label: string, figure: string, goal: string, ok: boolean | undefined) =>
    `  ${label.padEnd(38)}${figure.padEnd(30)}${goal.padEnd(34)}${verdict(ok)}`;
  const [aKa, nKa] = [cpuPerRequest(a, "keep-alive"), cpuPerRequest(n, "keep-alive")];
  const [aNew, nNew] = [cpuPerRequest(a, "new conns"), cpuPerRequest(n, "new conns")];
  const [aP99, nP99] = [a.connect.p99 - d.connect.p99, n.connect.p99 - d.connect.p99];
  const check = (ok: () => boolean, ...xs: number[]) => (known(...xs) ? ok() : undefined);
  return [
    `targets (issue 12)${"".padEnd(21)}${"ambit".padEnd(30)}${"target".padEnd(34)}verdict`,
    row(
      "CPU per keep-alive request, both ends",
      `${fixed(aKa, 1)} us (nginx ${fixed(nKa, 1)})`,
      "<= nginx's",
      check(() => aKa <= nKa, aKa, nKa),
    ),
    row(
      "keep-alive requests/s",
      `${fixed(a.keepAlive.rps, 0)} (${ratio(a.keepAlive.rps, n.keepAlive.rps)} nginx)`,
      ">= nginx",
      check(() => a.keepAlive.rps >= n.keepAlive.rps, a.keepAlive.rps, n.keepAlive.rps),
    ),
    row(
      "single-stream throughput",
      `${fixed(a.gbps, 2)} Gbit/s (${ratio(a.gbps, n.gbps)} nginx)`,
      ">= 1.2x nginx",
      check(() => a.gbps >= 1.2 * n.gbps, a.gbps, n.gbps),
    ),
    row(
      "new connections/s",
      `${fixed(a.close.rps, 0)} (${ratio(a.close.rps, n.close.rps)} nginx)`,
      ">= 3x nginx",
      check(() => a.close.rps >= 3 * n.close.rps, a.close.rps, n.close.rps),
    ),
    row(
      "CPU per new connection, both ends",
      `${fixed(aNew, 1)} us (nginx ${fixed(nNew, 1)})`,
      "<= 0.5x nginx's",
      check(() => aNew <= 0.5 * nNew, aNew, nNew),
    ),
    row(
      "p99 added connect + first byte",
      `${fixed(aP99, 3)} ms (nginx ${fixed(nP99, 3)})`,
      "<= nginx's",
      check(() => aP99 <= nP99, aP99, nP99),
    ),
    row(
      `idle agent, ${idle?.pods ?? 100} enrolled pods`,
      idle ? `${fixed(idle.cpuPercent, 2)} % core, ${fixed(idle.rssMiB, 0)} MiB` : "not measured",
      "< 1% of a core, RSS < 100 MB",
      idle ? idle.cpuPercent < 1 && idle.rssMiB * 1.048576 < 100 : undefined,
    ),
    ...workerRows(a, workers, row),
  ];
}

/** Each worker's percentage of `values` ("56/44%"). */
function shares(values: number[]): string {
  const total = values.reduce((a, b) => a + b, 0);
  return `${values.map((v) => fixed((v / total) * 100, 0)).join("/")}%`;
}

/** True when the agent ran MORE_WORKERS workers and each relayed at least MIN_SHARE of the bytes. */
function carried(counts: WorkerCounts): boolean {
  const total = counts.bytes.reduce((a, b) => a + b, 0);
  return counts.bytes.length === MORE_WORKERS && total > 0 && counts.bytes.every((b) => b >= MIN_SHARE * total);
}

/**
 * The "1 vs 2 workers" target, with the figures behind it on the rows below. Load per worker is judged by bytes
 * relayed, not connections accepted: n2 accepts HBONE sessions, one per n1 worker and pooled from the warm-up on,
 * so none during a step; on n1 a keep-alive connection's requests, hence its bytes, depend on its worker's speed.
 */
function workerRows(
  one: ModeResult,
  run: WorkersRun | string,
  row: (label: string, figure: string, goal: string, ok: boolean | undefined) => string,
): string[] {
  const label = `${WORKERS} vs ${MORE_WORKERS} workers`;
  const goal = `CPU/req <= ${FLAT_CPU}x, each >= ${MIN_SHARE * 100}%`;
  if (typeof run === "string") return [row(label, run, goal, undefined)];
  const [cpu1, cpu2] = [cpuPerRequest(one, "keep-alive"), cpuPerRequest(run.result, "keep-alive")];
  const keepAlive = run.growth["keep-alive"];
  const nodes = Object.keys(keepAlive);
  const spread = nodes.every((n) => carried(keepAlive[n] as WorkerCounts));
  // "n1 9/7 accepted, 55/45% bytes; n2 0/0, 50/50%": each agent's workers in the order of their labels.
  const perWorker = (step: WrkStep) =>
    nodes
      .map((n, i) => {
        const counts = run.growth[step][n];
        const [accepted, bytes] = [counts?.accepted.join("/") ?? "-", shares(counts?.bytes ?? [])];
        return i === 0 ? `${n} ${accepted} accepted, ${bytes} bytes` : `${n} ${accepted}, ${bytes}`;
      })
      .join("; ");
  const detail = (text: string, figure: string) => `    ${text.padEnd(36)}${figure}`;
  return [
    row(
      label,
      `${WORKERS}w ${fixed(cpu1, 1)} us, ${MORE_WORKERS}w ${fixed(cpu2, 1)} us`,
      goal,
      Number.isFinite(cpu1) && Number.isFinite(cpu2) ? cpu2 <= FLAT_CPU * cpu1 && spread : undefined,
    ),
    detail("keep-alive, per worker", perWorker("keep-alive")),
    detail("new conns, per worker", perWorker("new conns")),
    detail("HBONE sessions per n2 worker, total", run.total.n2?.accepted.join("/") ?? "-"),
    detail(
      `${MORE_WORKERS} workers: req/s, CPU per new conn`,
      `keep-alive ${fixed(run.result.keepAlive.rps, 0)}, new conns ${fixed(run.result.close.rps, 0)}; ` +
        `${fixed(cpuPerRequest(run.result, "new conns"), 1)} us (${WORKERS}w ${fixed(cpuPerRequest(one, "new conns"), 1)})`,
    ),
  ];
}

function report(
  results: Record<Mode, ModeResult>,
  idle: IdleAgent | undefined,
  workers: WorkersRun | string,
  notes: string[],
): string {
  const d = results.direct;
  // The second ambit run is reported beside the modes where it has figures of its own: CPU and wrk errors.
  const runs: Array<[string, ModeResult]> = MODES.map((m) => [m, results[m]]);
  if (typeof workers !== "string") runs.push([`ambit ${MORE_WORKERS}w`, workers.result]);
  const w = 12;
  const row = (label: string, get: (r: ModeResult) => number, digits: number) =>
    `${label.padEnd(30)}${MODES.map((m) => pad(fixed(get(results[m]), digits), w)).join("")}` +
    COMPARED.map((m) => pad(ratio(get(results[m]), get(d)), w)).join("");
  const lines = [
    `proxy bench: client pod on n1 -> server pod on n2 (veth + bridges + fabric), node ${process.version}, ${cpus().length} cores`,
    `  iperf3 1 stream ${SECONDS}s; wrk -c16 -t2 -d${SECONDS}s; ${PROBE_ROUNDS}x${PROBES_PER_ROUND} sequential connect+first-byte probes (modes alternating)`,
    "  js-relay: two bare Node.js TCP relays, no TLS: what Node's own sockets give with ambit's process layout",
    "  node-h2: HBONE's shape (CONNECT over one pooled mTLS HTTP/2 session) on node:http2, ambit's windows",
    "",
    `${"".padEnd(30)}${MODES.map((m) => pad(m, w)).join("")}${COMPARED.map((m) => pad(`${m.replace(/^(js|node)-/, "")}/dir`, w)).join("")}`,
    row("throughput Gbit/s", (r) => r.gbps, 2),
    row("keep-alive req/s", (r) => r.keepAlive.rps, 0),
    row("keep-alive p50 ms", (r) => r.keepAlive.p50Ms, 3),
    row("keep-alive p99 ms", (r) => r.keepAlive.p99Ms, 3),
    row("new connections/s", (r) => r.close.rps, 0),
    row("new connection p50 ms", (r) => r.close.p50Ms, 3),
    row("new connection p99 ms", (r) => r.close.p99Ms, 3),
    row("connect+first byte p50 ms", (r) => r.connect.median, 3),
    row("connect+first byte p99 ms", (r) => r.connect.p99, 3),
    row("CPU us per keep-alive req", (r) => cpuPerRequest(r, "keep-alive"), 1),
    row("CPU us per new connection", (r) => cpuPerRequest(r, "new conns"), 1),
    "",
    ...targets(results, idle, workers),
    "",
    "CPU while each test ran: tunnel/agent processes in % of one core; machine = all cores busy, % of total",
    ...runs.flatMap(([m, r]) =>
      Object.entries(r.cpu).map(
        ([test, byProc]) =>
          `  ${m.padEnd(8)} ${test.padEnd(11)} ${Object.entries(byProc)
            .map(([p, v]) => `${p} ${fixed(v, 0)}%`)
            .join("   ")}`,
      ),
    ),
  ];
  const errs = runs.flatMap(([m, r]) =>
    (["keepAlive", "close"] as const)
      .filter((k) => r[k].errors)
      .map((k) => `  ${m} ${k === "close" ? "new conns" : "keep-alive"}: ${r[k].errors}`),
  );
  if (errs.length) lines.push("", "wrk reported errors:", ...errs);
  if (notes.length) lines.push("", ...notes);
  return lines.join("\n");
}

export async function runProxyBench(): Promise<string> {
  const tmp = tempDir("proxy");
  let cluster: SimCluster | undefined;
  try {
    cluster = await createSimCluster({
      nodes: [
        { name: "n1", pods: [{ name: "client", labels: MESHED, serviceAccount: "client" }, { name: "dclient" }] },
        { name: "n2", pods: [{ name: "server", labels: MESHED, serviceAccount: "server" }, { name: "dserver" }] },
      ],
    });
    const c = cluster;
    const procs = new Procs(c);
    const [client, dclient, server, dserver] = ["client", "dclient", "server", "dserver"].map((p) => c.pod(p));
    if (!client || !dclient || !server || !dserver) throw new Error("simulated pods missing");

    // The load steps open ~10^5 connections from the same two client pods within a minute: with Linux's default
    // (tcp_tw_reuse=2, loopback only) the TIME_WAIT sockets they leave slow new connects down by the later modes
    // (direct alone in this sim, three 5 s Connection: close rounds: 12,000/s, then 7,800, then 900). Reuse on, in
    // every pod that opens connections, so each mode meets the same kernel.
    for (const pod of [client, dclient, server, dserver]) {
      await c.exec(pod.netnsName, "sysctl", ["-qw", "net.ipv4.tcp_tw_reuse=1"], { timeoutMs: 5000 });
    }

    // Apps in both server pods; tunnel ends in the non-meshed pair.
    // nginx workers run as nobody: they must be able to read the static file.
    chmodSync(tmp.dir, 0o755);
    const www = join(tmp.dir, "www");
    mkdirSync(www);
    writeFileSync(join(www, "index.html"), "ambit bench\n");
    const pki = join(tmp.dir, "pki");
    mkdirSync(pki);
    await makeTestPki(pki);
    for (const pod of [dserver, server]) {
      const dir = join(tmp.dir, `http-${pod.name}`);
      const conf = writeConf(dir, httpConfig(dir, www));
      procs.start(`nginx http (${pod.name})`, pod.netnsName, "nginx", ["-e", "stderr", "-p", dir, "-c", conf]);
      procs.start(`iperf3 -s (${pod.name})`, pod.netnsName, "iperf3", ["-s", "-p", String(IPERF_PORT)]);
    }
    const tunnel = existsSync(STREAM_MODULE);
    const notes = [`load average at start: ${loadAverage()} (other work on the machine skews absolute numbers)`];
    if (!tunnel) notes.push(`nginx baseline skipped: ${STREAM_MODULE} missing (Debian package libnginx-mod-stream)`);
    for (const [side, pod] of tunnel
      ? ([
          ["server", dserver],
          ["client", dclient],
        ] as const)
      : []) {
      const dir = join(tmp.dir, `tunnel-${side}`);
      const conf = writeConf(dir, tunnelConfig(dir, side, pki, dserver.ipv4));
      procs.start(`nginx tunnel ${side}`, pod.netnsName, "nginx", ["-e", "stderr", "-p", dir, "-c", conf]);
    }
    const { iperf, http } = RELAY;
    procs.start("js-relay n1", dclient.netnsName, process.execPath, [
      ...AGENT_NODE_FLAGS,
      JS_RELAY,
      `127.0.0.1:${iperf.local}=${dserver.ipv4}:${iperf.remote}`,
      `127.0.0.1:${http.local}=${dserver.ipv4}:${http.remote}`,
    ]);
    procs.start("js-relay n2", dserver.netnsName, process.execPath, [
      ...AGENT_NODE_FLAGS,
      JS_RELAY,
      `${dserver.ipv4}:${iperf.remote}=127.0.0.1:${IPERF_PORT}`,
      `${dserver.ipv4}:${http.remote}=127.0.0.1:${HTTP_PORT}`,
    ]);
    const h2Peer = `${dserver.ipv4}:${H2_RELAY.remote}`;
    procs.start("node-h2 n1", dclient.netnsName, process.execPath, [
      ...AGENT_NODE_FLAGS,
      NODE_H2_RELAY,
      "client",
      pki,
      `127.0.0.1:${H2_RELAY.iperf.local}=${h2Peer}/127.0.0.1:${IPERF_PORT}`,
      `127.0.0.1:${H2_RELAY.http.local}=${h2Peer}/127.0.0.1:${HTTP_PORT}`,
    ]);
    procs.start("node-h2 n2", dserver.netnsName, process.execPath, [
      ...AGENT_NODE_FLAGS,
      NODE_H2_RELAY,
      "server",
      pki,
      h2Peer,
    ]);
    const served = async (host: string, port: number) =>
      (await probeGet(c, dclient.netnsName, host, port, "/index.html")) === "ambit bench\n";
    await waitFor("the apps, the nginx tunnel and the js relays", async () => {
      procs.checkAlive();
      return (
        (await served(dserver.ipv4, HTTP_PORT)) &&
        (!tunnel || (await served("127.0.0.1", TUNNEL.http.local))) &&
        (await served("127.0.0.1", RELAY.http.local)) &&
        (await served("127.0.0.1", H2_RELAY.http.local))
      );
    });

    // One agent process per node, in the node's namespace, as a DaemonSet would run them. The first creates the CA.
    const manifests = join(tmp.dir, "cluster.json");
    await c.writeManifests(manifests);
    const agentArgs = (node: string, workers: number) => [
      ...AGENT_NODE_FLAGS,
      // Extra node flags for the agents only, to look inside a run: AMBIT_BENCH_AGENT_FLAGS="--cpu-prof --cpu-prof-dir=DIR".
      ...(process.env.AMBIT_BENCH_AGENT_FLAGS?.split(" ").filter(Boolean) ?? []),
      CLI,
      // Data-plane worker threads per agent: AMBIT_BENCH_WORKERS (default 1) for the first run, then MORE_WORKERS.
      ...fixedMetrics(localAgentArgs(node, manifests, join(tmp.dir, "ca"), workers)),
    ];
    /** Starts both agents and waits until the client reaches the server over the mesh; the milliseconds it took. */
    const startAgents = async (workers: number): Promise<number> => {
      const t0 = Date.now();
      procs.start("agent n1", c.node("n1").netnsName, process.execPath, agentArgs("n1", workers));
      await waitFor("agent n1 to enroll the client pod", async () => {
        procs.checkAlive();
        return tableInstalled(c, client.netnsName);
      });
      procs.start("agent n2", c.node("n2").netnsName, process.execPath, agentArgs("n2", workers));
      // Enrolled, then answered: the app sees the client's IP through the mesh as it does direct. A reset while
      // n2 finishes enrolling (its certificate, its workers taking the listeners) is tried again.
      await waitFor("client -> server over the mesh", async () => {
        procs.checkAlive();
        if (!(await tableInstalled(c, server.netnsName))) return false;
        const seen = await probeGet(c, client.netnsName, server.ipv4, HTTP_PORT, "/whoami").catch(() => "");
        return seen === client.ipv4;
      });
      return Date.now() - t0;
    };
    // Agents end by SIGTERM, as a DaemonSet's pods do: their threads exit cleanly (and write --cpu-prof profiles).
    const stopAgents = () => Promise.all(["agent n1", "agent n2"].map((name) => procs.terminate(name, 10_000)));
    const agentPids = () => ({ "agent n1": procs.pid("agent n1"), "agent n2": procs.pid("agent n2") });
    notes.push(`agents up and both pods meshed in ${await startAgents(WORKERS)} ms (from first agent start)`);

    const targets: Record<Mode, Target> = {
      direct: {
        netns: dclient.netnsName,
        iperf: { host: dserver.ipv4, port: IPERF_PORT },
        http: { host: dserver.ipv4, port: HTTP_PORT },
      },
      nginx: {
        netns: dclient.netnsName,
        iperf: { host: "127.0.0.1", port: TUNNEL.iperf.local },
        http: { host: "127.0.0.1", port: TUNNEL.http.local },
      },
      "js-relay": {
        netns: dclient.netnsName,
        iperf: { host: "127.0.0.1", port: RELAY.iperf.local },
        http: { host: "127.0.0.1", port: RELAY.http.local },
      },
      "node-h2": {
        netns: dclient.netnsName,
        iperf: { host: "127.0.0.1", port: H2_RELAY.iperf.local },
        http: { host: "127.0.0.1", port: H2_RELAY.http.local },
      },
      ambit: {
        netns: client.netnsName,
        iperf: { host: server.ipv4, port: IPERF_PORT },
        http: { host: server.ipv4, port: HTTP_PORT },
      },
    };
    const cpuOf: Record<Mode, Record<string, number | undefined>> = {
      direct: {},
      nginx: { "client-side": procs.pid("nginx tunnel client"), "server-side": procs.pid("nginx tunnel server") },
      "js-relay": { "relay n1": procs.pid("js-relay n1"), "relay n2": procs.pid("js-relay n2") },
      "node-h2": { "relay n1": procs.pid("node-h2 n1"), "relay n2": procs.pid("node-h2 n2") },
      ambit: agentPids(),
    };
    const results = { direct: MISSING, nginx: MISSING, "js-relay": MISSING, "node-h2": MISSING, ambit: MISSING };
    const active = MODES.filter((m) => m !== "nginx" || tunnel);
    for (const mode of active) results[mode] = { ...MISSING, cpu: {} };
    // Connect probes first: the load tests leave tens of thousands of TIME_WAIT sockets in the server pods.
    const samples = new Map<Mode, number[]>(active.map((m) => [m, []]));
    for (let round = 0; round < PROBE_ROUNDS; round++) {
      for (const mode of active) {
        const r = await withCpu(cpuOf[mode], () => probeRound(c, targets[mode]));
        samples.get(mode)?.push(...r.result);
        if (round === 0) results[mode].cpu.connect = r.cpu;
      }
      procs.checkAlive();
    }
    for (const mode of active) {
      const { cpu } = results[mode];
      results[mode] = await measure(c, procs, targets[mode], cpuOf[mode]);
      results[mode].cpu = { ...results[mode].cpu, ...cpu };
      results[mode].connect = stats(samples.get(mode) ?? []);
    }
    await stopAgents();
    let workers: WorkersRun | string;
    if (WORKERS !== 1) workers = `n/a: first run on ${WORKERS}`;
    else {
      // Same cluster, manifests and CA: only the number of workers differs from the run above.
      workers = await startAgents(MORE_WORKERS)
        .then((ms) => {
          notes.push(`agents restarted on ${MORE_WORKERS} workers, both pods meshed in ${ms} ms`);
          return measureWorkers(c, procs, targets.ambit, agentPids(), ["n1", "n2"]);
        })
        .catch((err: unknown) => {
          notes.push(`${MORE_WORKERS}-worker run failed: ${causes(err)}`);
          return "not measured (see the notes)";
        });
      await stopAgents();
    }
    notes.push(`load average at end: ${loadAverage()}`);
    // The idle agent runs alone, after the load: a cluster of its own, every other process of this bench stopped.
    await cluster.destroy();
    cluster = undefined;
    const idle = await measureIdleAgent().catch((err: unknown) => {
      notes.push(`idle agent not measured: ${err instanceof Error ? err.message : String(err)}`);
      return undefined;
    });
    return report(results, idle, workers, notes);
  } finally {
    await cluster?.destroy();
    tmp.remove();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(await runProxyBench());
}
