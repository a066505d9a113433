/**
 * An agent replaced by a new process on its node, as a DaemonSet with maxSurge does it: the new agent starts beside
 * the old one, opens its listeners in the pods beside the old one's (SO_REUSEPORT), and only then does the old one
 * get SIGTERM and drain. Steady new connections both ways and a long transfer run through the whole handover, with
 * a capture on the wire. Then the other promise: after a crash (SIGKILL) the pods fail closed and a new agent
 * restores them. test/netns/agent-upgrade.test.ts asserts on what runUpgrade measures; `make bench BENCH=upgrade`
 * prints it.
 */
import { type ChildProcess, execFile, execFileSync } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { SimCluster } from "../../../agent/sim/index.js";
import type { SimClusterSpec } from "../../../agent/sim/topology.js";
import { within } from "../../support/within.js";
import { localAgentArgs } from "./agent-args.js";
import { startCapture, type TcpSegment, tcpSegments } from "./capture.js";
import { ruleCount } from "./nft.js";
import { answerIn, closeServer, request } from "./sockets.js";
import { transfer as longTransfer, transferServer } from "./transfer.js";

const run = promisify(execFile);
const MESHED = { "ambit.dev/mesh": "enabled" };
/** Sent by every steady-load connection: found in the capture only if a payload crossed in plaintext. */
export const UPGRADE_MARKER = "UPGRADE-PLAINTEXT-MARKER-5d1e";
const CLI = fileURLToPath(new URL("../../../agent/cli.js", import.meta.url));
const HBONE_PORT = 15008;
/** The old agent's drain period: longer than the long transfer, so it ends within it. */
const DRAIN_SECONDS = 20;
/** n2's agents' readiness port, the same for both as on a node. */
const SHARED_READY_PORT = 15993;
/** The long transfer: paced to last about 9 s, so it starts before the new agent and ends after the old one's SIGTERM. */
const TRANSFER = { up: 24 * 1024 * 1024, down: 4 * 1024 * 1024, ms: 9_000 };

/** Pod a on n1 and pod b on n2, both meshed: n2's agent is the one replaced. */
export const UPGRADE_TOPOLOGY: SimClusterSpec = {
  nodes: [
    { name: "n1", pods: [{ name: "a", labels: MESHED }] },
    { name: "n2", pods: [{ name: "b", labels: MESHED }] },
  ],
};

/** Milliseconds until `check` holds, polled every 25 ms; throws naming `what` after `timeoutMs`. */
export async function eventually(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 15_000,
): Promise<number> {
  const started = performance.now();
  while (performance.now() - started < timeoutMs) {
    if (await Promise.resolve(check()).catch(() => false)) return performance.now() - started;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Listening sockets on `port` in the namespace at `netnsPath` (one per agent once both listen). */
export function listeners(netnsPath: string, port: number): number {
  const out = execFileSync("nsenter", [`--net=${netnsPath}`, "ss", "-Hltn", `sport = :${port}`], { encoding: "utf8" });
  return out.split("\n").filter((l) => l.includes("0.0.0.0:")).length;
}

/** ambit's table as nft prints it, without handles: what a re-applied table must equal. */
export function tableText(netnsPath: string): string {
  return execFileSync("nsenter", [`--net=${netnsPath}`, "nft", "list", "table", "inet", "ambit"], { encoding: "utf8" });
}

/** Sum of a counter's series with `labels` from an agent's /metrics (run inside the node's namespace). */
function counter(cluster: SimCluster, node: string, port: number, name: string, labels: string): number {
  const text = execFileSync(
    "ip",
    ["netns", "exec", cluster.node(node).netnsName, "curl", "-s", `127.0.0.1:${port}/metrics`],
    { encoding: "utf8" },
  );
  return text
    .split("\n")
    .filter((l) => l.startsWith(`${name}{`) && l.includes(labels))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
}

/** The HTTP status of GET /healthz/ready on the node's shared readiness port, 0 when nothing answers. */
async function readyStatus(cluster: SimCluster, node: string): Promise<number> {
  const { stdout } = await run(
    "ip",
    [
      "netns",
      "exec",
      cluster.node(node).netnsName,
      "curl",
      "-s",
      "-o",
      "/dev/null",
      "-m",
      "2",
      "-w",
      "%{http_code}",
      `127.0.0.1:${SHARED_READY_PORT}/healthz/ready`,
    ],
    { encoding: "utf8" },
  ).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? "" }));
  return Number(stdout.trim()) || 0;
}

export interface LoadResult {
  ok: number;
  failed: number;
  /** Failures by error code (ECONNRESET, ETIMEDOUT, bad_answer...). */
  errors: Map<string, number>;
}

/** New connections one after another from `from` to `to`, `parallel` at a time, until stop(); counts outcomes. */
export function steadyLoad(from: string, to: string, port: number, parallel: number) {
  const result: LoadResult = { ok: 0, failed: 0, errors: new Map() };
  let running = true;
  const loops = Array.from({ length: parallel }, async () => {
    while (running) {
      try {
        const answer = await request(from, to, port, UPGRADE_MARKER);
        if (answer.startsWith("hi")) result.ok++;
        else throw Object.assign(new Error(`answer ${JSON.stringify(answer)}`), { code: "bad_answer" });
      } catch (err) {
        result.failed++;
        const code = (err as { code?: string }).code ?? String(err);
        result.errors.set(code, (result.errors.get(code) ?? 0) + 1);
      }
    }
  });
  return {
    result,
    stop: async () => {
      running = false;
      await Promise.all(loops);
      return result;
    },
  };
}

export interface UpgradeRun {
  /** ambit's table in b's namespace: under the old agent, once the new one enrolled, once the old one exited. */
  tables: { before: string; afterJoin: string; afterExit: string };
  /** ms from the new agent's spawn until both agents listen on 15008 and 15001 in b. */
  readyMs: number;
  /** b's outbound connections each agent opened during 2 s with both listening (the kernel's hash spreads them). */
  spread: { old: number; new: number };
  /** ms from the old agent's SIGTERM until its listeners in b were gone, and until it exited (with `exitCode`). */
  closedMs: number;
  exitedMs: number;
  exitCode: number | null;
  /**
   * The node's readiness port and the probe files: the new agent's file said ready while the old agent still held
   * the port (and answered on it: `readyStatusBeforeTerm`); the old one's file was gone after SIGTERM; ms from its
   * exit until the new agent served the port.
   */
  probes: {
    successorReadyBeforeTerm: boolean;
    readyStatusBeforeTerm: number;
    oldReadyAfterTerm: boolean;
    portTakenMs: number;
  };
  /** New connections a -> b (inbound HBONE at n2) and b -> a (outbound at n2) through the whole handover. */
  inbound: LoadResult;
  outbound: LoadResult;
  /** The long a -> b transfer, started before the new agent and running past the old one's SIGTERM. */
  transfer: { up: number; down: number; ms: number; error?: string };
  /** What the capture on b's interface saw: every TCP segment between b and the other node. */
  wire: { bytes: Buffer; segments: TcpSegment[] };
  /** The crash: the new agent SIGKILLed, then a third agent started. */
  crash: {
    /** How a -> b failed while no agent ran ("answered" if it did not: a pod that fails open). */
    whileDown: string;
    rulesWhileDown: number;
    /** ms until a -> b answered again: from the third agent's spawn, and from the SIGKILL. */
    restoredFromStartMs: number;
    restoredFromKillMs: number;
  };
}

/**
 * The whole scenario on a cluster made from UPGRADE_TOPOLOGY. Everything it starts (agents, servers, tcpdump, a
 * temp dir) is stopped or removed before it returns or throws; the cluster is the caller's to destroy.
 */
export async function runUpgrade(cluster: SimCluster): Promise<UpgradeRun> {
  const [a, b] = [cluster.pod("a"), cluster.pod("b")];
  const servers = [
    answerIn(b.netnsPath, b.ipv4, 8080, () => "hi from b"),
    answerIn(a.netnsPath, a.ipv4, 8080, () => "hi from a"),
    transferServer(b.netnsPath, b.ipv4, 9000),
  ];
  const dir = mkdtempSync(join(tmpdir(), "ambit-upgrade-"));
  const children = new Set<ChildProcess>();
  let stopCapture: ((lastMarker?: string) => Promise<Buffer>) | undefined;
  const loads: Array<ReturnType<typeof steadyLoad>> = [];
  try {
    const manifests = join(dir, "cluster.json");
    await cluster.writeManifests(manifests);
    // n2's agents share the readiness port, as on a node (hostNetwork), and wait for it; each has its own probe files.
    // Metrics stay apart: the scenario reads each agent's counters.
    const start = (node: string, metricsPort: number) => {
      const args = localAgentArgs(node, manifests, join(dir, "ca"));
      args[args.indexOf("--metrics") + 1] = `127.0.0.1:${metricsPort}`;
      if (node === "n2") args[args.indexOf("--ready") + 1] = `127.0.0.1:${SHARED_READY_PORT}`;
      const child = cluster.spawnIn(
        cluster.node(node).netnsName,
        process.execPath,
        [
          CLI,
          ...args,
          "--drain-seconds",
          String(DRAIN_SECONDS),
          ...(node === "n2" ? ["--wait-for-ports", "--probe-dir", join(dir, `probes-${metricsPort}`)] : []),
        ],
        { stdio: ["ignore", "ignore", "inherit"] },
      );
      children.add(child);
      child.once("exit", () => children.delete(child));
      return child;
    };
    const opened = (port: number) =>
      counter(cluster, "n2", port, "istio_tcp_connections_opened_total", `reporter="source"`);
    const exited = (child: ChildProcess, what: string, ms: number) =>
      within(
        child.exitCode !== null || child.signalCode !== null
          ? Promise.resolve([child.exitCode] as [number | null])
          : (once(child, "exit") as Promise<[number | null]>),
        ms,
        what,
      );

    // n2 first: it creates the shared local CA.
    const old = start("n2", 15990);
    await eventually("b enrolled", () => listeners(b.netnsPath, HBONE_PORT) === 1);
    start("n1", 15990);
    await eventually("a enrolled", () => listeners(a.netnsPath, HBONE_PORT) === 1);
    await eventually("a -> b through the mesh", async () => (await request(a.netnsPath, b.ipv4, 8080)) === "hi from b");
    await eventually("b -> a through the mesh", async () => (await request(b.netnsPath, a.ipv4, 8080)) === "hi from a");
    const before = tableText(b.netnsPath);

    stopCapture = await startCapture(cluster.node("n2").netnsName, b.hostInterface, join(dir, "wire.pcap"));
    const inbound = steadyLoad(a.netnsPath, b.ipv4, 8080, 3);
    const outbound = steadyLoad(b.netnsPath, a.ipv4, 8080, 3);
    loads.push(inbound, outbound);
    const transferStarted = performance.now();
    const long = longTransfer(a.netnsPath, b.ipv4, 9000, TRANSFER.up, TRANSFER.down, TRANSFER.ms).then(
      () => performance.now() - transferStarted,
    );
    long.catch(() => {});
    await new Promise((r) => setTimeout(r, 1000));

    // The new agent: its listeners open beside the old ones once it has the pod's certificate.
    const oldBefore = opened(15990);
    const successor = start("n2", 15991);
    const readyMs = await eventually("the new agent's listeners beside the old ones", () => {
      return listeners(b.netnsPath, HBONE_PORT) === 2 && listeners(b.netnsPath, 15001) === 2;
    });
    const afterJoin = tableText(b.netnsPath);
    const successorReady = join(dir, "probes-15991", "ready");
    await eventually("the new agent's probe file says ready", () => existsSync(successorReady), 10_000);
    const readyBeforeTerm = await readyStatus(cluster, "n2");
    // Both agents listen: the kernel hashes b's new outbound connections between them.
    const newBefore = opened(15991);
    await new Promise((r) => setTimeout(r, 2000));
    const spread = { old: opened(15990) - oldBefore, new: opened(15991) - newBefore };

    const signalled = performance.now();
    old.kill("SIGTERM");
    await eventually("the old agent's listeners closed", () => listeners(b.netnsPath, HBONE_PORT) === 1, 5_000);
    const closedMs = performance.now() - signalled;
    const oldReadyAfterTerm = existsSync(join(dir, "probes-15990", "ready"));
    const [exitCode] = await exited(old, "the old agent's exit after SIGTERM", (DRAIN_SECONDS + 5) * 1000);
    const exitedMs = performance.now() - signalled;
    // The old agent is gone: whoever answers on the port now is the new one.
    const portTakenMs = await eventually(
      "the new agent serving the shared readiness port",
      async () => (await readyStatus(cluster, "n2")) === 200,
      5_000,
    );
    await new Promise((r) => setTimeout(r, 1000));
    const [inResult, outResult] = await Promise.all([inbound.stop(), outbound.stop()]);
    // Bounded: a transfer cut by the old agent may stall rather than fail.
    const transfer: UpgradeRun["transfer"] = { up: TRANSFER.up, down: TRANSFER.down, ms: Number.NaN };
    try {
      transfer.ms = await within(long, 15_000, "the long transfer");
    } catch (err) {
      transfer.error = err instanceof Error ? err.message : String(err);
    }
    // The last steady-load connection sent the marker too: a plaintext one would be in the file by now.
    const bytes = await stopCapture();
    stopCapture = undefined;
    const afterExit = tableText(b.netnsPath);

    // A crash: the new agent is killed; the pod fails closed; a fresh agent restores service.
    const killed = performance.now();
    successor.kill("SIGKILL");
    await exited(successor, "the new agent's exit after SIGKILL", 5_000);
    const whileDown = await request(a.netnsPath, b.ipv4, 8080).then(
      () => "answered",
      (err: { code?: string }) => err.code ?? String(err),
    );
    const rulesWhileDown = ruleCount(b.netnsPath);
    const restarted = performance.now();
    start("n2", 15992);
    const restoredFromStartMs = await eventually(
      "service restored after the crash",
      async () => (await request(a.netnsPath, b.ipv4, 8080)) === "hi from b",
      20_000,
    );
    return {
      tables: { before, afterJoin, afterExit },
      readyMs,
      spread,
      closedMs,
      exitedMs,
      exitCode,
      probes: {
        successorReadyBeforeTerm: existsSync(successorReady),
        readyStatusBeforeTerm: readyBeforeTerm,
        oldReadyAfterTerm,
        portTakenMs,
      },
      inbound: inResult,
      outbound: outResult,
      transfer,
      wire: { bytes, segments: tcpSegments(bytes) },
      crash: {
        whileDown,
        rulesWhileDown,
        restoredFromStartMs,
        restoredFromKillMs: restarted - killed + restoredFromStartMs,
      },
    };
  } finally {
    await Promise.all(loads.map((l) => l.stop()));
    await stopCapture?.().catch(() => {});
    for (const c of children) c.kill("SIGKILL");
    await Promise.all([...children].map((c) => once(c, "exit")));
    await Promise.all(servers.map(closeServer));
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Segments between the nodes that are not HBONE (port 15008 at either end): traffic that left the mesh. */
export function plaintextSegments(segments: readonly TcpSegment[]): TcpSegment[] {
  return segments.filter((s) => s.srcPort !== HBONE_PORT && s.dstPort !== HBONE_PORT);
}

/** Segments whose payload carries the steady load's marker. */
export function markerSegments(segments: readonly TcpSegment[]): TcpSegment[] {
  return segments.filter((s) => s.payload.includes(UPGRADE_MARKER));
}
