/**
 * The agent following an API server of a large cluster: a real `ambit agent` (--kubeconfig) for one simulated node
 * of 20 pods, against the test API server loaded with 10,000 pods on other nodes and 2,000 Services with their
 * EndpointSlices. Prints the agent's memory and CPU with that index, and how long a label takes, from the API
 * event to the pod's rules being live in its namespace (and gone again).
 */
import { performance } from "node:perf_hooks";
import type { ConfigDump } from "../../agent/admin/facts.js";
import { createSimCluster, type SimCluster } from "../../agent/sim/index.js";
import type { KubeObject } from "../kube-api/resources.js";
import { adminJson, kubeMeshFor } from "../netns/support/kube-agents.js";
import { tableExists } from "../netns/support/nft.js";
import { benchOwner, cpuSeconds, fixed, onePodNode, rssMiB, sleep, stats, waitFor } from "./support.js";

const CLUSTER_PODS = 10_000;
const SERVICES = 2_000;
const NODE_PODS = 20;
const NAMESPACES = 100;

/** 100.64.0.0/10 (shared address space): never a simulated pod's address (those are 10.k.x.y). */
const podIp = (i: number) => `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;

function bigCluster(): KubeObject[] {
  const objects: KubeObject[] = [];
  for (let n = 0; n < NAMESPACES; n++) {
    objects.push({
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: `ns-${n}`, labels: n % 2 === 0 ? { "ambit.dev/mesh": "enabled" } : {} },
    });
  }
  for (let i = 0; i < CLUSTER_PODS; i++) {
    objects.push({
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name: `web-7d9f8b6c5d-${i}`,
        namespace: `ns-${i % NAMESPACES}`,
        uid: `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
        labels: { app: `app-${i % SERVICES}`, "pod-template-hash": "7d9f8b6c5d" },
        ownerReferences: [
          { apiVersion: "apps/v1", kind: "ReplicaSet", name: "web-7d9f8b6c5d", uid: "r", controller: true },
        ],
      },
      spec: { nodeName: `node-${2 + (i % 49)}`, serviceAccountName: "web", containers: [{ name: "app", image: "x" }] },
      status: { phase: "Running", podIP: podIp(i), podIPs: [{ ip: podIp(i) }] },
    });
  }
  for (let s = 0; s < SERVICES; s++) {
    const namespace = `ns-${s % NAMESPACES}`;
    const vip = `10.${96 + (s >> 16)}.${(s >> 8) & 255}.${s & 255}`;
    objects.push({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: `svc-${s}`, namespace },
      spec: { clusterIP: vip, clusterIPs: [vip], ports: [{ name: "http", port: 80, targetPort: 8080 }] },
    });
    const members = [s, s + SERVICES, s + 2 * SERVICES].filter((i) => i < CLUSTER_PODS);
    objects.push({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: `svc-${s}-1`, namespace, labels: { "kubernetes.io/service-name": `svc-${s}` } },
      addressType: "IPv4",
      endpoints: members.map((i) => ({ addresses: [podIp(i)], conditions: { ready: true } })),
      ports: [{ name: "http", port: 8080, protocol: "TCP" }],
    });
  }
  return objects;
}

export async function runKubeAgentBench(): Promise<string> {
  const { owner, cleanup } = benchOwner();
  let cluster: SimCluster | undefined;
  try {
    cluster = await createSimCluster(onePodNode(NODE_PODS, "bench"));
    const c = cluster;
    // Bookmarks once a minute and the agent's default stall watchdog, as against a real API server.
    const mesh = await kubeMeshFor(owner, c, { agents: ["n1"], bookmarkIntervalMs: 60_000, stallSeconds: 120 });
    const agent = mesh.agents.get("n1");
    if (!agent) throw new Error("no agent");
    const pid = agent.child.pid;
    await sleep(2000);
    const rssSmall = rssMiB(pid);

    // The big cluster arrives as watch events (10,000 ADDED pods and 4,000 more objects).
    const big = bigCluster();
    const cpu0 = cpuSeconds(pid);
    const t0 = performance.now();
    mesh.api.applyAll(big);
    await waitFor(
      "the agent to index the cluster",
      async () => {
        const dump = await adminJson<ConfigDump>(agent, "/config_dump");
        return dump.cluster.pods >= CLUSTER_PODS + NODE_PODS && dump.cluster.services >= SERVICES;
      },
      120_000,
    );
    const ingestSeconds = (performance.now() - t0) / 1000;
    const ingestCpu = cpuSeconds(pid) - cpu0;
    await sleep(3000);
    const idleCpu0 = cpuSeconds(pid);
    await sleep(10_000);
    const idlePercent = ((cpuSeconds(pid) - idleCpu0) / 10) * 100;
    const rssBig = rssMiB(pid);

    // Labels on this node's pods: from the API event to the rules in the pod's namespace, and back. The table is made
    // with its rules in one batch, so its presence is "rules live".
    const enroll: number[] = [];
    const unenroll: number[] = [];
    const cpu1 = cpuSeconds(pid);
    for (let i = 0; i < NODE_PODS; i++) {
      const pod = c.pod(`p${i}`, "bench");
      const timed = async (mode: string, done: () => boolean, into: number[]) => {
        const start = performance.now();
        mesh.api.patchLabels("Pod", "bench", pod.name, { "ambit.dev/mesh": mode });
        while (!done()) await sleep(1);
        into.push(performance.now() - start);
      };
      await timed("enabled", () => tableExists(pod.netnsPath), enroll);
      await timed("disabled", () => !tableExists(pod.netnsPath), unenroll);
    }
    const labelCpuMs = ((cpuSeconds(pid) - cpu1) / (2 * NODE_PODS)) * 1000;
    const e = stats(enroll);
    const u = stats(unenroll);
    return [
      `kube bench (agent): one agent (--kubeconfig) for a node of ${NODE_PODS} pods; the test API server holds`,
      `  ${CLUSTER_PODS} pods on 49 other nodes, ${SERVICES} Services with EndpointSlices, ${NAMESPACES} namespaces`,
      `  agent RSS                         ${fixed(rssSmall, 0)} MiB with its own node only -> ${fixed(rssBig, 0)} MiB with the index`,
      `  ingesting the cluster (watch)     ${fixed(ingestSeconds, 2)} s wall, ${fixed(ingestCpu, 2)} s CPU`,
      `  idle CPU with the index           ${fixed(idlePercent, 2)} % of a core (10 s)`,
      `  label added -> rules live         p50 ${fixed(e.median, 1)} ms, p99 ${fixed(e.p99, 1)} ms (${enroll.length} pods)`,
      `  label removed -> rules gone       p50 ${fixed(u.median, 1)} ms, p99 ${fixed(u.p99, 1)} ms`,
      `  agent CPU per label change        ${fixed(labelCpuMs, 1)} ms (snapshot, indexes of ${CLUSTER_PODS} pods, diff, rules)`,
    ].join("\n");
  } finally {
    await cleanup();
    await cluster?.destroy();
  }
}
