import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ExecutionContext } from "ava";
import type { NamespaceSpec } from "../../../agent/kube/pod.js";
import { silentLogger } from "../../../agent/log.js";
import type { AgentConfig } from "../../../agent/node/config.js";
import { type AgentHooks, type RunningAgent, startAgent } from "../../../agent/node/run-agent.js";
import type { SimCluster } from "../../../agent/sim/index.js";

export interface TestMesh {
  dir: string;
  podFile: string;
  agents: RunningAgent[];
  /** Rewrite the pod file (atomically) and wait until every agent applied it. */
  update(namespaces?: NamespaceSpec[]): Promise<void>;
}

/**
 * One in-process agent per simulated node, sharing an embedded CA directory (as one cluster CA), all stopped and
 * their pods unenrolled when the test ends.
 */
export async function meshFor(
  t: ExecutionContext,
  cluster: SimCluster,
  options: { namespaces?: NamespaceSpec[]; certLifetimeSec?: number; hooks?: (node: string) => AgentHooks } = {},
): Promise<TestMesh> {
  const dir = mkdtempSync(join(tmpdir(), "ambit-test-"));
  const podFile = join(dir, "pods.json");
  await cluster.writePodFile(podFile, { namespaces: options.namespaces ?? [] });
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
      nodeName: node.name,
      podFile,
      trustDomain: "cluster.local",
      caDir: join(dir, "ca"),
      certLifetimeSec: options.certLifetimeSec ?? 3600,
      hostRules: false,
      metricsAddress: "127.0.0.1:0",
      adminAddress: "127.0.0.1:0",
      readyAddress: "127.0.0.1:0",
      logLevel: "silent",
    };
    agents.push(await startAgent(config, silentLogger, options.hooks?.(node.name) ?? {}));
  }
  return {
    dir,
    podFile,
    agents,
    update: async (namespaces) => {
      const applied = agents.map((a) => new Promise((resolve) => a.source.once("change", resolve)));
      await cluster.writePodFile(podFile, { namespaces: namespaces ?? [] });
      await Promise.all(applied);
      // Let the agents' enrollment (async certificate fetches) settle.
      await new Promise((r) => setTimeout(r, 200));
    },
  };
}
