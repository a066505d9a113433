/**
 * Starting the demo's processes inside the simulated cluster: `ambit ca`, one `ambit agent` per node, the apps.
 * Every process is started through SimCluster.spawnIn, so destroy() and the exit hooks kill it.
 */
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { AGENT_NODE_FLAGS } from "../node/runtime-flags.js";
import type { SimCluster } from "../sim/index.js";

export const CLI = fileURLToPath(new URL("../cli.js", import.meta.url));
export const APP = fileURLToPath(new URL("./app.js", import.meta.url));
export const CA_PORT = 15012;
/** The agent's default ports; each agent has its own node namespace, so they never clash. */
export const PORTS = { metrics: 15020, admin: 15000, ready: 15021 };

export interface Started {
  name: string;
  child: ChildProcess;
  log: string;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function tail(path: string, lines = 15): string {
  try {
    return readFileSync(path, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/** Throws, with the end of its log, if the process has exited. */
export function checkAlive(p: Started): void {
  if (p.child.exitCode !== null || p.child.signalCode !== null) {
    throw new Error(`${p.name} exited (${p.child.exitCode ?? p.child.signalCode}); end of ${p.log}:\n${tail(p.log)}`);
  }
}

export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** Spawns `node args` in a namespace with stdout and stderr appended to `log`. */
function startNode(cluster: SimCluster, netns: string, name: string, log: string, args: string[]): Started {
  const fd = openSync(log, "a");
  try {
    const child = cluster.spawnIn(netns, process.execPath, args, { stdio: ["ignore", fd, fd] });
    return { name, child, log };
  } finally {
    // The child holds its own copy of the descriptor.
    closeSync(fd);
  }
}

/**
 * One GET from inside a namespace (the demo itself stays in the root namespace, where the agents' loopback-bound
 * admin servers are not reachable). Rejects on a non-200 answer or a connection failure.
 */
export async function getIn(cluster: SimCluster, netns: string, url: string, timeoutMs = 3000): Promise<string> {
  const { stdout } = await cluster.exec(netns, process.execPath, [APP, "get", url, String(timeoutMs)], {
    timeoutMs: timeoutMs + 2000,
  });
  return stdout;
}

export interface Ca {
  process: Started;
  url: string;
  bundle: string;
  tokens: Record<string, string>;
}

/**
 * `ambit ca` in n1's node namespace, listening on n1's fabric address: n1's agent reaches it locally and every
 * other node through the fabric, as agents reach a CA Service in a cluster. Callers are authenticated by a token
 * file mapping one random token per node; the CA only signs for pods on the caller's node.
 */
export async function startCa(cluster: SimCluster, dir: string, manifests: string): Promise<Ca> {
  const host = cluster.nodes[0];
  if (!host) throw new Error("the demo cluster has no nodes");
  const tokens: Record<string, string> = {};
  const table: Record<string, string> = {};
  for (const node of cluster.nodes) {
    const token = randomBytes(16).toString("hex");
    tokens[node.name] = join(dir, `token-${node.name}`);
    writeFileSync(tokens[node.name] as string, `${token}\n`, { mode: 0o600 });
    table[token] = node.name;
  }
  const tokenFile = join(dir, "ca-tokens.json");
  writeFileSync(tokenFile, JSON.stringify(table), { mode: 0o600 });
  const caDir = join(dir, "ca");
  const args = [CLI, "ca", "--listen", `${host.uplink4}:${CA_PORT}`, "--ca-dir", caDir, "--manifests", manifests];
  args.push("--token-file", tokenFile, "--serving-ip", host.uplink4);
  const proc = startNode(cluster, host.netnsName, "ambit ca", join(dir, "ca.log"), args);
  const bundle = join(caDir, "ca.crt");
  await waitFor("the CA to serve", async () => {
    checkAlive(proc);
    return existsSync(bundle) && readFileSync(proc.log, "utf8").includes("mesh CA serving");
  });
  return { process: proc, url: `https://${host.uplink4}:${CA_PORT}`, bundle, tokens };
}

/** One `ambit agent` per node, in the node's namespace, as a DaemonSet would run them; resolves once all are ready. */
export async function startAgents(cluster: SimCluster, dir: string, manifests: string, ca: Ca): Promise<Started[]> {
  const agents = cluster.nodes.map((node) =>
    startNode(cluster, node.netnsName, `agent ${node.name}`, join(dir, `agent-${node.name}.log`), [
      ...AGENT_NODE_FLAGS,
      CLI,
      "agent",
      "--node",
      node.name,
      "--manifests",
      manifests,
      "--ca-url",
      ca.url,
      "--ca-bundle",
      ca.bundle,
      "--ca-token-file",
      ca.tokens[node.name] as string,
      "--metrics",
      `0.0.0.0:${PORTS.metrics}`,
      "--admin",
      `127.0.0.1:${PORTS.admin}`,
      "--ready",
      `0.0.0.0:${PORTS.ready}`,
    ]),
  );
  await Promise.all(
    agents.map((agent, i) =>
      waitFor(`${agent.name} to be ready (pods redirected, certificates issued)`, async () => {
        checkAlive(agent);
        const ns = cluster.nodes[i]?.netnsName as string;
        await getIn(cluster, ns, `http://127.0.0.1:${PORTS.ready}/healthz/ready`, 1000);
        return true;
      }),
    ),
  );
  return agents;
}

/** The app server in each given pod; resolves once every one listens. */
export async function startApps(cluster: SimCluster, pods: string[], port: number): Promise<void> {
  await Promise.all(
    pods.map((name) => {
      const pod = cluster.pods.find((p) => p.name === name);
      if (!pod) throw new Error(`the demo cluster has no pod ${name}`);
      const child = cluster.spawnIn(pod.netnsName, process.execPath, [APP, "serve", String(port), name]);
      return new Promise<void>((resolve, reject) => {
        child.stdout?.once("data", () => resolve());
        child.once("exit", (code) => reject(new Error(`app in ${name} exited (${code}) before listening`)));
      });
    }),
  );
}
