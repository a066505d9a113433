import test from "ava";
import { clusterStateOf } from "../../../agent/kube/cluster-state.js";
import { MESH_LABEL } from "../../../agent/kube/mesh-selection.js";
import type { EndpointSliceRecord, ServiceRecord } from "../../../agent/kube/records.js";
import { ServiceIndex } from "../../../agent/kube/service-index.js";
import { routeOutbound } from "../../../agent/proxy/outbound-route.js";
import { WorkloadIndex } from "../../../agent/proxy/workload-index.js";
import { podRecord } from "../../support/records.js";

const meshed = { [MESH_LABEL]: "enabled" };
const service = (name: string, ip: string): ServiceRecord => ({
  name,
  namespace: "shop",
  clusterIPs: [ip],
  ports: [{ name: "", port: 80, protocol: "TCP", targetPort: 8080 }],
});
const slice = (svc: string, ips: Array<[string, boolean]>): EndpointSliceRecord => ({
  name: `${svc}-1`,
  namespace: "shop",
  service: svc,
  addressType: "IPv4",
  endpoints: ips.map(([ip, ready]) => ({ addresses: [ip], ready })),
  ports: [{ name: "", port: 8080, protocol: "TCP" }],
});

const state = clusterStateOf({
  namespaces: [{ name: "shop", labels: {} }],
  pods: [
    podRecord({ name: "api-1", labels: meshed, ips: ["10.0.1.2"], serviceAccount: "api" }),
    podRecord({ name: "api-2", labels: meshed, ips: ["10.0.2.2"], serviceAccount: "api" }),
    podRecord({ name: "legacy", ips: ["10.0.1.9"] }),
    podRecord({ name: "host", labels: meshed, ips: ["192.168.0.5"], hostNetwork: true }),
  ],
  services: [service("api", "10.96.0.1"), service("legacy", "10.96.0.2"), service("empty", "10.96.0.3")],
  endpointSlices: [
    slice("api", [
      ["10.0.1.2", true],
      ["10.0.2.2", true],
    ]),
    slice("legacy", [["10.0.1.9", true]]),
    slice("empty", [["10.0.1.2", false]]),
  ],
});
const workloads = new WorkloadIndex(state, "cluster.local");
const services = ServiceIndex.of(state);

test("a meshed pod IP goes over HBONE to itself, with its identity", (t) => {
  const r = routeOutbound({ address: "10.0.1.2", port: 8080 }, workloads, services);
  t.like(r, { kind: "hbone", address: "10.0.1.2", port: 8080 });
  t.is(r.kind === "hbone" ? r.target.spiffe : "", "spiffe://cluster.local/ns/shop/sa/api");
});

test("a Service VIP is resolved to a ready endpoint: HBONE to its pod IP and target port, spread over endpoints", (t) => {
  const picks = Array.from({ length: 4 }, () => routeOutbound({ address: "10.96.0.1", port: 80 }, workloads, services));
  for (const r of picks) t.like(r, { kind: "hbone", port: 8080, service: "shop/api" });
  const used = new Set(picks.map((r) => (r.kind === "hbone" ? r.address : "")));
  t.deepEqual([...used].sort(), ["10.0.1.2", "10.0.2.2"]);
});

test("a Service whose endpoint is not meshed is left to kube-proxy; no ready endpoint is refused", (t) => {
  t.like(routeOutbound({ address: "10.96.0.2", port: 80 }, workloads, services), {
    kind: "passthrough",
    service: "shop/legacy",
  });
  t.deepEqual(routeOutbound({ address: "10.96.0.3", port: 80 }, workloads, services), {
    kind: "refuse",
    reason: "no_ready_endpoint",
    service: "shop/empty",
  });
});

test("anything else passes through: unknown IPs, other ports of a VIP, non-meshed and host-network pods", (t) => {
  for (const dst of [
    { address: "8.8.8.8", port: 443 },
    { address: "10.96.0.1", port: 443 },
    { address: "10.0.1.9", port: 8080 },
    { address: "192.168.0.5", port: 10250 },
  ]) {
    t.deepEqual(routeOutbound(dst, workloads, services), { kind: "passthrough" }, `${dst.address}:${dst.port}`);
  }
});
