import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ExecutionContext } from "ava";
import { type Logger, silentLogger } from "../../../agent/log.js";
import type { AgentConfig } from "../../../agent/node/config.js";
import { type AgentHooks, type RunningAgent, startAgent } from "../../../agent/node/run-agent.js";
import type { NamespaceSpec, SimCluster } from "../../../agent/sim/index.js";
import { TEST_WORKERS } from "./data-path.js";

export interface TestMesh {
  dir: string;
  /** The directory of manifests the agents follow; the cluster itself is in `clusterFile`. */
  manifests: string;
  clusterFile: string;
  agents: RunningAgent[];
  /** Rewrite the cluster's manifest (atomically, with `extra` objects) and wait until every agent applied it. */
  update(namespaces?: NamespaceSpec[], extra?: unknown[]): Promise<void>;
}

/**
 * An in-process agent's configuration for a simulated node: the cluster from a manifests directory, an embedded CA in
 * `caDir` (shared by a test's agents: one root), servers on free loopback ports, no logs, TEST_WORKERS.
 */
export function localAgentConfig(node: string, manifests: string, caDir: string): AgentConfig {
  return {
    nodeName: node,
    source: { kind: "manifests", path: manifests },
    rootNamespace: "istio-system",
    trustDomain: "cluster.local",
    caDir,
    certLifetimeSec: 3600,
    hostRules: false,
    metricsAddress: "127.0.0.1:0",
    adminAddress: "127.0.0.1:0",
    readyAddress: "127.0.0.1:0",
    logLevel: "silent",
    workers: TEST_WORKERS,
  };
}

/**
 * One in-process agent per simulated node, sharing an embedded CA directory (as one cluster CA), all stopped and
 * their pods unenrolled when the test ends.
 */
export async function meshFor(
  t: ExecutionContext,
  cluster: SimCluster,
  options: {
    namespaces?: NamespaceSpec[];
    certLifetimeSec?: number;
    hooks?: (node: string) => AgentHooks;
    /** Data-plane worker threads per agent; default TEST_WORKERS. */
    workers?: number;
    /** Settings over the test's defaults, for every agent (e.g. from parseAgentConfig, to check a flag). */
    config?: Partial<AgentConfig>;
    /** Where the agents log; default nowhere. */
    logger?: Logger;
  } = {},
): Promise<TestMesh> {
  const dir = mkdtempSync(join(tmpdir(), "ambit-test-"));
  const manifests = join(dir, "manifests");
  mkdirSync(manifests);
  const clusterFile = join(manifests, "cluster.json");
  await cluster.writeManifests(clusterFile, options.namespaces ?? []);
  const agents: RunningAgent[] = [];
  t.teardown(async () => {
    for (const a of agents) {
      for (const e of a.redirector.enrolled()) a.redirector.unenroll(`${e.pod.namespace}/${e.pod.name}`);
      await a.stop();
    }
    rmSync(dir, { recursive: true, force: true });
  });
  for (const node of cluster.nodes) {
    const config: AgentConfig = {
      ...localAgentConfig(node.name, manifests, join(dir, "ca")),
      certLifetimeSec: options.certLifetimeSec ?? 3600,
      workers: options.workers ?? TEST_WORKERS,
      ...options.config,
    };
    agents.push(await startAgent(config, options.logger ?? silentLogger, options.hooks?.(node.name) ?? {}));
  }
  return {
    dir,
    manifests,
    clusterFile,
    agents,
    update: async (namespaces, extra) => {
      const applied = agents.map((a) => new Promise((resolve) => a.source.once("change", resolve)));
      await cluster.writeManifests(clusterFile, namespaces ?? [], extra ?? []);
      await Promise.all(applied);
      // Let the agents' enrollment (async certificate fetches) settle.
      await new Promise((r) => setTimeout(r, 200));
    },
  };
}
