import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { convertPod } from "../../agent/kube/convert-core.js";
import { PeerAuthenticationResolver, type PolicyTarget } from "../../agent/kube/peer-authentication.js";
import type { EndpointSliceRecord, PeerAuthenticationRecord, ServiceRecord } from "../../agent/kube/records.js";
import { ServiceIndex, type ServiceTarget } from "../../agent/kube/service-index.js";
import { runKubeAgentBench } from "./kube-agent-bench.js";
import { fixed, pad } from "./support.js";

/**
 * Costs of the pure kube pieces, in one process (no root, no I/O): converting API Pods, building the Service index
 * and answering lookup/pick per connection, and resolving PeerAuthentication per connection.
 */

const PODS = 10_000;
const LOOKUPS = 1_000_000;
const POLICY_NAMESPACES = 100;

/** Median of `runs` timings of `fn`, in ms. */
function timeMs(runs: number, fn: () => void): number {
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    fn();
    samples.push(performance.now() - t0);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)] as number;
}

function apiPod(i: number): unknown {
  return {
    metadata: {
      name: `web-7d9f8b6c5d-${i}`,
      namespace: `ns-${i % 100}`,
      uid: `uid-${i}`,
      labels: { app: "web", "pod-template-hash": "7d9f8b6c5d", version: "v1" },
      annotations: { "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z" },
      ownerReferences: [
        { apiVersion: "apps/v1", kind: "ReplicaSet", name: "web-7d9f8b6c5d", uid: "r", controller: true },
      ],
    },
    spec: { serviceAccountName: "web", nodeName: `node-${i % 50}` },
    status: { phase: "Running", podIPs: [{ ip: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` }] },
  };
}

function cluster(services: number): { services: ServiceRecord[]; slices: EndpointSliceRecord[] } {
  const out = { services: [] as ServiceRecord[], slices: [] as EndpointSliceRecord[] };
  for (let i = 0; i < services; i++) {
    const ns = `ns-${i % 100}`;
    const name = `svc-${i}`;
    const ip = (base: number, k: number) => `${base}.${k}.${(i >> 8) & 255}.${i & 255}`;
    out.services.push({
      name,
      namespace: ns,
      clusterIPs: [ip(10, 96 + (i >> 16))],
      ports: [
        { name: "http", port: 80, protocol: "TCP", targetPort: "http" },
        { name: "grpc", port: 9000, protocol: "TCP", targetPort: 9000 },
      ],
    });
    const ports = [
      { name: "http", port: 8080, protocol: "TCP" },
      { name: "grpc", port: 9000, protocol: "TCP" },
    ];
    for (const part of [0, 1, 2]) {
      out.slices.push({
        name: `${name}-${part}`,
        namespace: ns,
        service: name,
        addressType: "IPv4",
        endpoints: [0, 1].map((e) => ({ addresses: [ip(11 + part * 2 + e, 0)], ready: e === 0 || part !== 2 })),
        ports,
      });
    }
  }
  return out;
}

function policies(): PeerAuthenticationRecord[] {
  const out: PeerAuthenticationRecord[] = [
    { name: "default", namespace: "istio-system", createdAt: "", mtls: "STRICT" },
  ];
  for (let n = 0; n < POLICY_NAMESPACES; n++) {
    const namespace = `ns-${n}`;
    out.push({ name: "default", namespace, createdAt: "2026-01-01T00:00:00Z", mtls: n % 2 ? "PERMISSIVE" : "UNSET" });
    for (let w = 0; w < 10; w++) {
      out.push({
        name: `w-${w}`,
        namespace,
        createdAt: `2026-01-01T00:00:${String(w).padStart(2, "0")}Z`,
        selector: { app: `app-${w}` },
        mtls: "UNSET",
        portLevelMtls: { 8080: "DISABLE" },
      });
    }
  }
  return out;
}

export async function runKubeBench(): Promise<string> {
  const lines = [`kube bench (node ${process.version}); medians`];

  const raw = Array.from({ length: PODS }, (_, i) => apiPod(i));
  const convertMs = timeMs(5, () => {
    for (const p of raw) if (!("record" in convertPod(p))) throw new Error("bench pod did not convert");
  });
  lines.push(
    `convertPod: ${PODS} API pods          ${pad(fixed(convertMs), 8)} ms  (${fixed((convertMs * 1000) / PODS)} µs/pod)`,
  );

  for (const n of [2_000, 10_000]) {
    const { services, slices } = cluster(n);
    const buildMs = timeMs(5, () => new ServiceIndex(services, slices));
    const index = new ServiceIndex(services, slices);
    const addresses = services.map((s) => s.clusterIPs[0] as string);
    let found = 0;
    const t0 = performance.now();
    for (let i = 0; i < LOOKUPS; i++) if (index.lookup(addresses[i % n] as string, 80)) found++;
    const lookupNs = ((performance.now() - t0) * 1e6) / LOOKUPS;
    if (found !== LOOKUPS) throw new Error(`lookups found ${found} of ${LOOKUPS}`);
    const targets = addresses.map((a) => index.lookup(a, 80) as ServiceTarget);
    const t1 = performance.now();
    for (const target of targets) index.pick(target);
    const firstPickUs = ((performance.now() - t1) * 1000) / n;
    const t2 = performance.now();
    for (let i = 0; i < LOOKUPS; i++) index.pick(targets[i % n] as ServiceTarget);
    const pickNs = ((performance.now() - t2) * 1e6) / LOOKUPS;
    lines.push(
      `ServiceIndex, ${pad(String(n), 6)} services (3 slices, 6 endpoints each)`,
      `  build                               ${pad(fixed(buildMs), 8)} ms`,
      `  lookup(ip, port)                    ${pad(fixed(lookupNs, 0), 8)} ns`,
      `  first pick (gathers the endpoints)  ${pad(fixed(firstPickUs), 8)} µs`,
      `  pick                                ${pad(fixed(pickNs, 0), 8)} ns`,
    );
  }

  const all = policies();
  const buildMs = timeMs(5, () => new PeerAuthenticationResolver(all));
  const resolver = new PeerAuthenticationResolver(all);
  const pods: PolicyTarget[] = Array.from({ length: 5_000 }, (_, i) => ({
    namespace: `ns-${i % POLICY_NAMESPACES}`,
    labels: { app: `app-${i % 20}`, "pod-template-hash": "abc", version: "v1" },
  }));
  const t3 = performance.now();
  for (const pod of pods) resolver.mode(pod, 80);
  const firstUs = ((performance.now() - t3) * 1000) / pods.length;
  const t4 = performance.now();
  for (let i = 0; i < LOOKUPS; i++) resolver.mode(pods[i % pods.length] as PolicyTarget, i & 1 ? 8080 : 80);
  const modeNs = ((performance.now() - t4) * 1e6) / LOOKUPS;
  lines.push(
    `PeerAuthenticationResolver, ${all.length} policies over ${POLICY_NAMESPACES} namespaces, 5,000 pods`,
    `  build                               ${pad(fixed(buildMs), 8)} ms`,
    `  first mode() of a pod               ${pad(fixed(firstUs), 8)} µs`,
    `  mode() (memoised)                   ${pad(fixed(modeNs, 0), 8)} ns`,
  );
  // The whole agent against an API server of that size (needs root: simulated pods in network namespaces).
  return `${await runKubeAgentBench()}\n\n${lines.join("\n")}`;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(await runKubeBench());
}
