/**
 * A simulated cluster whose truth is a Kubernetes API server (the test server in test/kube-api), followed by real
 * `ambit ca` and `ambit agent` processes as a cluster runs them: --kubeconfig, a TokenReview-checked token per node,
 * namespaces found through /proc (the agents ignore the sim's netns annotation in this mode). The processes run in
 * the test's own namespace (the API server listens on its loopback), are killed when the test ends, and with the
 * simulator's exit hooks if the test process dies first.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { NODE_NAME_EXTRA } from "../../../agent/ca/kube-token-reviewer.js";
import { AGENT_NODE_FLAGS } from "../../../agent/node/runtime-flags.js";
import { trackChild } from "../../../agent/sim/cleanup.js";
import type { NamespaceSpec, SimCluster } from "../../../agent/sim/index.js";
import { waitFor } from "../../bench/support.js";
import type { KubeObject } from "../../kube-api/resources.js";
import { KubeApiServer } from "../../kube-api/server.js";
import { TEST_WORKERS } from "./data-path.js";

const CLI = join(import.meta.dirname, "..", "..", "..", "agent", "cli.js");
export const AGENT_USER = "system:serviceaccount:ambit-system:ambit-agent";

/** What the processes are tied to: an ava test (`t`) or a bench (its own cleanup list). */
export interface Owner {
  teardown(fn: () => unknown): void;
  log(...values: unknown[]): void;
}

export interface Proc {
  child: ChildProcess;
  /** Every JSON log line so far. */
  lines: Array<Record<string, unknown>>;
  exited: Promise<number | null>;
}

export interface KubeAgent extends Proc {
  node: string;
  admin: string;
  ready: string;
  metrics: string;
}

export interface KubeMesh {
  api: KubeApiServer;
  dir: string;
  ca: Proc & { url: string };
  agents: Map<string, KubeAgent>;
  /** Starts the agent of `node` (again, after stop) and waits until it is ready. */
  startAgent(node: string): Promise<KubeAgent>;
  stopAgent(node: string, signal?: NodeJS.Signals): Promise<void>;
}

function run(t: Owner, args: string[], env: Record<string, string> = {}): Proc {
  const child = spawn(process.execPath, [...AGENT_NODE_FLAGS, CLI, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  trackChild(child);
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  const lines: Array<Record<string, unknown>> = [];
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
    try {
      lines.push(JSON.parse(line));
    } catch {
      lines.push({ msg: line });
    }
  });
  let stderr = "";
  child.stderr?.on("data", (d) => {
    stderr += d;
  });
  const exited = once(child, "exit").then(([code]) => {
    if (code !== 0 && code !== null) t.log(`${args[0]} exited ${code}: ${stderr.slice(-2000)}`);
    return code as number | null;
  });
  return { child, lines, exited };
}

/**
 * The first log line of a process whose message matches, once there is one. A process took ~1.5 s of CPU to load and start when the kube configuration
 * still loaded @kubernetes/client-node (half of it); beside the whole suite and a test's other processes on 2
 * cores, 20 s has been seen, so the bound is a minute: it only catches a process that never gets there.
 */
async function logged(p: Proc, msg: string, what: string): Promise<Record<string, unknown>> {
  let found: Record<string, unknown> | undefined;
  const check = async () => {
    if (p.child.exitCode !== null) throw new Error(`${what}: the process exited`);
    found = p.lines.find((l) => String(l.msg).includes(msg));
    return found !== undefined;
  };
  await waitFor(what, check, 60_000);
  return found as Record<string, unknown>;
}

export async function kubeMeshFor(
  t: Owner,
  cluster: SimCluster,
  options: {
    namespaces?: NamespaceSpec[];
    extra?: Record<string, unknown>[];
    agents?: string[];
    /** Bookmarks every 300 ms and a 2 s stall watchdog by default: outages show within a test's time. */
    bookmarkIntervalMs?: number;
    stallSeconds?: number;
  } = {},
): Promise<KubeMesh> {
  const api = await KubeApiServer.start({ bookmarkIntervalMs: options.bookmarkIntervalMs ?? 300 });
  t.teardown(() => api.close());
  api.applyAll([...cluster.objects(options.namespaces ?? []), ...(options.extra ?? [])] as KubeObject[]);
  const dir = mkdtempSync(join(tmpdir(), "ambit-kube-mesh-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const kubeconfig = await api.writeKubeconfig({ path: join(dir, "kubeconfig"), tokenFile: true });

  const caProc = run(t, [
    "ca",
    "--listen",
    "127.0.0.1:0",
    "--ca-dir",
    join(dir, "ca"),
    "--kubeconfig",
    kubeconfig,
    "--kube-allowed-user",
    AGENT_USER,
    "--log-level",
    "info",
  ]);
  const serving = await logged(caProc, "mesh CA serving", "the CA to serve");
  const ca = { ...caProc, url: String(serving.url) };

  const agents = new Map<string, KubeAgent>();
  const startAgent = async (node: string): Promise<KubeAgent> => {
    const token = `agent-token-${node}`;
    api.setTokenUser(token, { user: { username: AGENT_USER, extra: { [NODE_NAME_EXTRA]: [node] } } });
    const tokenFile = join(dir, `token-${node}`);
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    const proc = run(t, [
      "agent",
      "--node",
      node,
      "--kubeconfig",
      kubeconfig,
      "--watch-stall-timeout",
      String(options.stallSeconds ?? 2),
      "--ca-url",
      ca.url,
      "--ca-bundle",
      join(dir, "ca", "ca.crt"),
      "--ca-token-file",
      tokenFile,
      "--metrics",
      "127.0.0.1:0",
      "--admin",
      "127.0.0.1:0",
      "--ready",
      "127.0.0.1:0",
      "--log-level",
      "info",
      "--workers",
      String(TEST_WORKERS),
    ]);
    const endpoints = await logged(proc, "serving metrics, admin and readiness", `agent ${node} to serve`);
    const agent: KubeAgent = {
      ...proc,
      node,
      admin: String(endpoints.admin),
      ready: String(endpoints.ready),
      metrics: String(endpoints.metrics),
    };
    agents.set(node, agent);
    await waitFor(`agent ${node} ready`, async () => (await fetch(`http://${agent.ready}/healthz/ready`)).ok, 60_000);
    return agent;
  };
  const stopAgent = async (node: string, signal: NodeJS.Signals = "SIGTERM") => {
    const agent = agents.get(node);
    if (!agent) return;
    agent.child.kill(signal);
    await agent.exited;
    agents.delete(node);
  };
  // Side by side, as a DaemonSet's pods start: each agent's start-up is mostly its own process loading (~1.7 s).
  await Promise.all((options.agents ?? cluster.nodes.map((n) => n.name)).map(startAgent));
  return { api, dir, ca, agents, startAgent, stopAgent };
}

/** GET a JSON document from an agent's admin server. */
export async function adminJson<T>(agent: KubeAgent, path: string): Promise<T> {
  const res = await fetch(`http://${agent.admin}${path}`);
  return (await res.json()) as T;
}

/** Log lines of an agent whose message contains `text`. */
export function linesWith(p: Proc, text: string): Array<Record<string, unknown>> {
  return p.lines.filter((l) => String(l.msg).includes(text));
}
