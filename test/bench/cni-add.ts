/**
 * ambit-cni's ADD as the kubelet sees it, end to end: the plugin's process start, its call to the agent, the pod's
 * enrollment (rules, listeners, certificate) and the answer. Each round ADDs a meshed pod's sandbox and DELs it,
 * and ADDs a pod outside the mesh; prints p50/p99 of each and of a bare `node -e 0` for scale. The meshed pod runs
 * three ways: with another pod of its identity enrolled (its certificate is held: a Deployment's next replica);
 * alone, with its certificate fetched when its record arrived (the agent prefetches for this node's pods without
 * IPs yet, and the kubelet creates the sandbox after); alone, with the ADD right as its record arrives (the ADD
 * waits for a new key and its signing).
 * Run: node dist/test/bench/cni-add.js [runs] [plugin]   (root; default 200 runs; plugin: an installed executable such
 *   as dist/cni/ambit-cni from `make cni-plugin`, else node runs the compiled module)
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../../agent/log.js";
import { startAgent } from "../../agent/node/run-agent.js";
import { createSimCluster, writeFileAtomic } from "../../agent/sim/index.js";
import { localAgentConfig } from "../netns/support/agents.js";
import { chainedConfig, runPlugin } from "../support/cni-plugin.js";

const runs = Number(process.argv[2] ?? 200);
const executable = process.argv[3];
const cluster = await createSimCluster({
  nodes: [
    {
      name: "n1",
      pods: [
        { name: "a", labels: { "ambit.dev/mesh": "enabled" } },
        { name: "b" },
        { name: "c", labels: { "ambit.dev/mesh": "enabled" } },
      ],
    },
  ],
});
const dir = mkdtempSync(join(tmpdir(), "ambit-cni-bench-"));
try {
  mkdirSync(join(dir, "m"));
  // a and b as at ADD: placed, no IPs, no namespace path; c running and enrolled (same service account as a).
  const items = cluster.objects().map((o) => {
    const obj = o as { kind?: string; metadata?: Record<string, unknown> };
    if (obj.kind !== "Pod" || obj.metadata?.name === "c") return o;
    const { annotations: _, ...metadata } = obj.metadata ?? {};
    return { ...o, metadata, status: { phase: "Pending" } };
  });
  const manifest = join(dir, "m", "cluster.json");
  await writeFileAtomic(manifest, { apiVersion: "v1", kind: "List", items });
  const socket = join(dir, "cni.sock");
  const agent = await startAgent(
    { ...localAgentConfig("n1", join(dir, "m"), join(dir, "ca")), workers: 1, cniSocket: socket },
    createLogger({ level: process.env.BENCH_LOG ?? "silent" }),
  );
  const [a, b] = [cluster.pod("a"), cluster.pod("b")];
  const cachedMs: number[] = [];
  const prefetchedMs: number[] = [];
  const newKeyMs: number[] = [];
  const plainMs: number[] = [];
  const bareMs: number[] = [];
  const addMeshed = async (i: number, into: number[], settle = false) => {
    if (settle) await agent.agent.settled();
    const call = { containerId: `s${i}`, netns: a.netnsPath, pod: { namespace: "default", name: "a" } };
    const add = await runPlugin(
      { command: "ADD", ...call },
      chainedConfig([a.ipv4], { agentSocket: socket }),
      executable,
    );
    if (add.status !== 0) throw new Error(`ADD failed: ${add.stdout}`);
    into.push(add.ms);
    await runPlugin({ command: "DEL", ...call }, chainedConfig([], { agentSocket: socket }), executable);
  };
  for (let i = 0; i < runs; i++) {
    const call = (name: string, netns: string) => ({
      containerId: `s${i}`,
      netns,
      pod: { namespace: "default", name },
    });
    await addMeshed(i, cachedMs);
    const plain = await runPlugin(
      { command: "ADD", ...call("b", b.netnsPath) },
      chainedConfig([b.ipv4], { agentSocket: socket }),
      executable,
    );
    if (plain.status !== 0) throw new Error(`ADD failed: ${plain.stdout}`);
    plainMs.push(plain.ms);
    const t0 = process.hrtime.bigint();
    spawnSync(process.execPath, ["-e", "0"]);
    bareMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  const applied = new Promise((resolve) => agent.source.once("change", resolve));
  const withoutC = items.filter((o) => (o as { metadata?: { name?: string } }).metadata?.name !== "c");
  await writeFileAtomic(manifest, { apiVersion: "v1", kind: "List", items: withoutC });
  await applied;
  for (let i = 0; i < runs; i++) await addMeshed(runs + i, prefetchedMs, true);
  for (let i = 0; i < runs; i++) await addMeshed(2 * runs + i, newKeyMs);
  const pct = (xs: number[], p: number) =>
    [...xs].sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor(xs.length * p))]?.toFixed(1);
  for (const [what, xs] of [
    ["ADD, meshed pod, its identity's certificate held", cachedMs],
    ["ADD, meshed pod, first of its identity, certificate prefetched from its record", prefetchedMs],
    ["ADD, meshed pod, first of its identity, ADD as its record arrives (new key)", newKeyMs],
    ["ADD, pod outside the mesh", plainMs],
    ["node -e 0", bareMs],
  ] as const) {
    console.log(`${what}: p50 ${pct(xs, 0.5)} ms, p99 ${pct(xs, 0.99)} ms, max ${pct(xs, 1)} ms (${xs.length} runs)`);
  }
  await agent.stop();
} finally {
  await cluster.destroy();
  rmSync(dir, { recursive: true, force: true });
}
