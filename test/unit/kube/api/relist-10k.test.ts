import test from "ava";
import { pod } from "../../../kube-api/objects.js";
import type { KubeObject } from "../../../kube-api/resources.js";
import { apiServer, source, until } from "./support.js";

/**
 * A relist of 10,000 pods through the client against the test API server (20 pages of 500 over one keep-alive
 * connection, JSON parsing, one replace()). Measured on the shared 2-core development machine (node 20, medians of
 * 5 runs; `node_modules/.bin/ava dist/test/unit/kube/api/relist-10k.test.js --verbose` prints the figures):
 * - minimal pods (~0.35 KiB of JSON each, ~3.4 MiB in all): first list 0.31 s, relist after 410 0.31 s
 *   (runs: 0.17-0.40 s);
 * - pods with ~3.6 KiB each (labels, a last-applied annotation, 3 containers; ~35 MiB in all): first list 1.6 s,
 *   relist 1.4 s (runs: 1.0-2.0 s).
 * The test API server runs in the same process, so serialising the pages is included in these figures. Only a
 * generous liveness bound is asserted.
 */

function bulkyPod(i: number): KubeObject {
  const p = pod({
    name: `p-${i}`,
    namespace: `ns-${i % 50}`,
    nodeName: `node-${i % 100}`,
    ip: `10.1.${i >> 8}.${i & 255}`,
  });
  p.metadata.labels = { app: `app-${i % 200}`, "pod-template-hash": "5d9c8b7f6", tier: "backend" };
  p.metadata.annotations = { "kubectl.kubernetes.io/last-applied-configuration": "x".repeat(2500) };
  (p.spec as { containers: unknown[] }).containers = Array.from({ length: 3 }, (_, c) => ({
    name: `c${c}`,
    image: `registry.example/team/app-${c}:1.2.3`,
    ports: [{ containerPort: 8080 + c, protocol: "TCP" }],
    env: [{ name: "MODE", value: "production" }],
    resources: { requests: { cpu: "100m", memory: "128Mi" } },
  }));
  return p;
}

for (const [label, make] of [
  ["minimal", (i: number) => pod({ name: `p-${i}`, namespace: `ns-${i % 50}` })],
  ["~3.6 KiB", bulkyPod],
] as const) {
  test.serial(`a relist of 10,000 ${label} pods completes (figures in the log)`, async (t) => {
    const api = await apiServer(t);
    api.applyAll(Array.from({ length: 10_000 }, (_, i) => make(i)));
    const lists: Array<{ seconds: number; pages: number; items: number }> = [];
    const { source: s, sink } = await source(t, api, { observer: { listed: (_r, info) => lists.push(info) } });
    await s.start();
    await api.waitForWatches(1, "pods");
    await api.stop();
    api.patchLabels("Pod", "ns-0", "p-0", { moved: "on" });
    await api.restart({ compact: true }); // the watch's resourceVersion is now gone: 410, relist
    await until(() => lists.length === 2, "the relist", 60_000);
    t.is(sink.keys("pods").length, 10_000);
    t.like(lists[1], { items: 10_000, pages: 20 });
    t.log(`first list ${lists[0]?.seconds.toFixed(3)} s, relist ${lists[1]?.seconds.toFixed(3)} s (20 pages of 500)`);
  });
}
