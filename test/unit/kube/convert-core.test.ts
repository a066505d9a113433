import test from "ava";
import type { Converted } from "../../../agent/kube/convert-common.js";
import { convertNamespace, convertPod, convertService, mergePodUpdate } from "../../../agent/kube/convert-core.js";
import type { PodRecord } from "../../../agent/kube/records.js";

/** A Deployment's pod as the API server serves it (trimmed of fields ambit does not read). */
const apiPod = () => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: {
    name: "web-7d9f8b6c5d-x2x7q",
    namespace: "shop",
    uid: "5b0d6a3e-1111-4c4c-9e9e-000000000001",
    creationTimestamp: "2026-01-02T03:04:05Z",
    labels: { app: "web", "pod-template-hash": "7d9f8b6c5d" },
    annotations: { "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z" },
    ownerReferences: [
      { apiVersion: "apps/v1", kind: "ReplicaSet", name: "web-7d9f8b6c5d", uid: "r", controller: true },
    ],
  },
  spec: { serviceAccountName: "web", nodeName: "node-a", containers: [{ name: "web", image: "nginx" }] },
  status: {
    phase: "Running",
    podIP: "10.244.1.7",
    podIPs: [{ ip: "10.244.1.7" }, { ip: "fd00:10:244:1::7" }],
  },
});

function record<T>(result: Converted<T>): T {
  if ("problem" in result) throw new Error(`unexpected problem: ${result.problem}`);
  return result.record;
}

function problem<T>(result: Converted<T>): string {
  if (!("problem" in result)) throw new Error(`expected a problem, got ${JSON.stringify(result.record)}`);
  return result.problem;
}

/** `base` with `path` (a.b.c) set to `value` (undefined deletes it). */
function withField(base: Record<string, unknown>, path: string, value: unknown): Record<string, unknown> {
  const copy = structuredClone(base);
  const keys = path.split(".");
  let at: Record<string, unknown> = copy;
  for (const k of keys.slice(0, -1)) {
    at[k] ??= {};
    at = at[k] as Record<string, unknown>;
  }
  const last = keys.at(-1) as string;
  if (value === undefined) delete at[last];
  else at[last] = value;
  return copy;
}

test("a Deployment's pod from the API server: every field the record keeps", (t) => {
  t.deepEqual(record(convertPod(apiPod())), {
    uid: "5b0d6a3e-1111-4c4c-9e9e-000000000001",
    name: "web-7d9f8b6c5d-x2x7q",
    namespace: "shop",
    serviceAccount: "web",
    nodeName: "node-a",
    labels: { app: "web", "pod-template-hash": "7d9f8b6c5d" },
    ips: ["10.244.1.7", "fd00:10:244:1::7"],
    phase: "Running",
    hostNetwork: false,
    terminating: false,
    workload: "web",
  });
});

test("pod defaults: service account, node, labels, phase, IPs from podIP, no netns", (t) => {
  const raw = apiPod();
  const spec = raw.spec as Record<string, unknown>;
  delete spec.serviceAccountName;
  delete spec.nodeName;
  const meta = raw.metadata as Record<string, unknown>;
  delete meta.labels;
  delete meta.uid;
  raw.status = { podIP: "10.244.1.8" } as typeof raw.status;
  const pod = record(convertPod(raw));
  t.is(pod.serviceAccount, "default");
  t.is(pod.nodeName, "");
  t.deepEqual(pod.labels, {});
  t.is(pod.uid, "");
  t.is(pod.phase, "Pending");
  t.deepEqual(pod.ips, ["10.244.1.8"]);
  t.false("netns" in pod);
  // Without the pod-template-hash label the ReplicaSet's name is all there is.
  t.is(pod.workload, "web-7d9f8b6c5d");
});

test("a pod with no status yet has no IPs; an empty podIPs falls back to podIP", (t) => {
  t.deepEqual(record(convertPod(withField(apiPod(), "status", undefined))).ips, []);
  const raw = withField(apiPod(), "status.podIPs", []);
  t.deepEqual(record(convertPod(raw)).ips, ["10.244.1.7"]);
});

test("workload: controller owner per kind, the pod itself without one", (t) => {
  const owned = (kind: string, name: string, controller = true) =>
    withField(apiPod(), "metadata.ownerReferences", [{ apiVersion: "apps/v1", kind, name, uid: "u", controller }]);
  t.is(record(convertPod(owned("StatefulSet", "db"))).workload, "db");
  t.is(record(convertPod(owned("DaemonSet", "agent"))).workload, "agent");
  t.is(record(convertPod(owned("Job", "migrate-29000000"))).workload, "migrate-29000000");
  // A ReplicaSet whose name does not end in the pod's hash (not made by a Deployment) keeps its name.
  t.is(record(convertPod(owned("ReplicaSet", "hand-made"))).workload, "hand-made");
  // A non-controller reference does not make a workload.
  t.is(record(convertPod(owned("ReplicaSet", "web-7d9f8b6c5d", false))).workload, "web-7d9f8b6c5d-x2x7q");
  t.is(record(convertPod(withField(apiPod(), "metadata.ownerReferences", undefined))).workload, "web-7d9f8b6c5d-x2x7q");
  const two = withField(apiPod(), "metadata.ownerReferences", [
    { kind: "ReplicaSet", name: "a", controller: true },
    { kind: "StatefulSet", name: "b", controller: true },
  ]);
  t.regex(problem(convertPod(two)), /more than one controller/);
});

test("hostNetwork, terminating and the netns annotation", (t) => {
  let raw = withField(apiPod(), "spec.hostNetwork", true);
  raw = withField(raw, "metadata.deletionTimestamp", "2026-01-02T03:05:00Z");
  raw = withField(raw, "metadata.annotations", { "ambit.dev/netns": "/var/run/netns/web" });
  const pod = record(convertPod(raw));
  t.true(pod.hostNetwork);
  t.true(pod.terminating);
  t.is(pod.netns, "/var/run/netns/web");
});

test("bad pods are problems naming the pod and every fault", (t) => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [withField(apiPod(), "status.podIPs", [{ ip: "10.0.0.300" }]), /^Pod shop\/web-7d9f8b6c5d-x2x7q: .*invalid IPs/],
    [withField(apiPod(), "status.podIPs", [{ ip: "fe80::1%eth0" }]), /invalid IPs/],
    [withField(apiPod(), "status.podIPs", ["10.0.0.1"]), /status.podIPs must hold objects/],
    [
      withField(withField(apiPod(), "status.podIPs", undefined), "status.podIP", 167772161),
      /invalid IPs number 167772161/,
    ],
    [withField(apiPod(), "status.podIPs", [{ ip: "10.0.0.1" }, { ip: "10.0.0.2" }]), /two addresses of one family/],
    [withField(apiPod(), "status.podIPs", [{ ip: "10.0.0.1" }, { ip: "fd00::1" }, { ip: "10.0.0.2" }]), /at most 2/],
    [withField(apiPod(), "metadata.labels", { app: 7 }), /labels\["app"\] must be a label value/],
    [withField(apiPod(), "metadata.labels", { "bad key!": "x" }), /invalid keys "bad key!"/],
    [withField(apiPod(), "metadata.annotations", { "ambit.dev/netns": "netns/web" }), /must be an absolute path/],
    [withField(apiPod(), "metadata.annotations", { "ambit.dev/netns": 3 }), /must be an absolute path/],
    [withField(apiPod(), "metadata.name", ""), /^Pod shop\/\?: metadata.name must be a DNS-1123 subdomain/],
    [withField(apiPod(), "metadata.name", "x".repeat(254)), /metadata.name must be a DNS-1123 subdomain/],
    [withField(apiPod(), "metadata.namespace", undefined), /^Pod \?\/web-7d9f8b6c5d-x2x7q: metadata.namespace/],
    [withField(apiPod(), "status.phase", "Exploded"), /unknown status.phase "Exploded"/],
    [withField(apiPod(), "spec.hostNetwork", "yes"), /spec.hostNetwork must be a boolean/],
    [withField(apiPod(), "spec.serviceAccountName", "Not A Name"), /spec.serviceAccountName must be/],
    [withField(apiPod(), "metadata.deletionTimestamp", "yesterday"), /deletionTimestamp must be an RFC 3339 time/],
    [withField(apiPod(), "metadata.ownerReferences", "web"), /ownerReferences must be an array/],
    [withField(apiPod(), "kind", "Service"), /^Pod shop\/web-7d9f8b6c5d-x2x7q: kind is "Service"/],
    [withField(apiPod(), "apiVersion", "v2"), /unsupported apiVersion "v2"/],
  ];
  for (const [raw, expected] of cases) t.regex(problem(convertPod(raw)), expected);
  // Several faults are reported together.
  const both = withField(withField(apiPod(), "status.phase", "Exploded"), "spec.hostNetwork", 1);
  t.regex(problem(convertPod(both)), /status.phase.*; spec.hostNetwork/);
});

test("a list item without apiVersion/kind is converted (List answers leave them out)", (t) => {
  const raw = withField(withField(apiPod(), "apiVersion", undefined), "kind", undefined);
  t.is(record(convertPod(raw)).name, "web-7d9f8b6c5d-x2x7q");
});

test("mergePodUpdate: a terminating pod that lost its IPs keeps the last known ones", (t) => {
  const running = record(convertPod(apiPod()));
  const draining: PodRecord = { ...running, terminating: true, ips: [] };
  t.deepEqual(mergePodUpdate(running, draining).ips, running.ips);
  t.true(mergePodUpdate(running, draining).terminating);
  // And keeps them through further updates while it still has none.
  const again = mergePodUpdate(mergePodUpdate(running, draining), { ...draining, phase: "Succeeded" });
  t.deepEqual(again.ips, running.ips);
  // New IPs win; a pod that is not terminating loses its IPs; no previous record: as given.
  t.deepEqual(mergePodUpdate(running, { ...draining, ips: ["10.0.0.9"] }).ips, ["10.0.0.9"]);
  t.deepEqual(mergePodUpdate(running, { ...running, ips: [] }).ips, []);
  t.is(mergePodUpdate(undefined, draining), draining);
  // A new pod under the same name (other uid) does not inherit its predecessor's addresses.
  t.deepEqual(mergePodUpdate(running, { ...draining, uid: "another" }).ips, []);
});

test("Namespace: name and labels; a subdomain that is no DNS label is refused", (t) => {
  const ns = {
    apiVersion: "v1",
    kind: "Namespace",
    metadata: { name: "shop", labels: { "ambit.dev/mesh": "enabled" } },
  };
  t.deepEqual(record(convertNamespace(ns)), { name: "shop", labels: { "ambit.dev/mesh": "enabled" } });
  t.deepEqual(record(convertNamespace({ metadata: { name: "bare" } })), { name: "bare", labels: {} });
  t.regex(problem(convertNamespace({ metadata: { name: "a.b" } })), /^Namespace a.b: .*not a DNS-1123 label/);
  t.regex(problem(convertNamespace({ metadata: { name: "shop", labels: [] } })), /labels must be an object/);
});

const apiService = () => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: "web", namespace: "shop" },
  spec: {
    type: "ClusterIP",
    clusterIP: "10.96.0.10",
    clusterIPs: ["10.96.0.10", "fd00:96::10"],
    ports: [
      { name: "http", port: 80, protocol: "TCP", targetPort: "http-web" },
      { name: "admin", port: 9000, targetPort: 9090 },
      { name: "metrics", port: 9100 },
    ],
  },
});

test("Service: ClusterIPs and ports with their defaults", (t) => {
  t.deepEqual(record(convertService(apiService())), {
    name: "web",
    namespace: "shop",
    clusterIPs: ["10.96.0.10", "fd00:96::10"],
    ports: [
      { name: "http", port: 80, protocol: "TCP", targetPort: "http-web" },
      { name: "admin", port: 9000, protocol: "TCP", targetPort: 9090 },
      { name: "metrics", port: 9100, protocol: "TCP", targetPort: 9100 },
    ],
  });
  const single = withField(withField(apiService(), "spec.clusterIPs", undefined), "spec.ports", [
    { port: 53, protocol: "UDP", targetPort: 0 },
  ]);
  t.deepEqual(record(convertService(single)).clusterIPs, ["10.96.0.10"]);
  t.deepEqual(record(convertService(single)).ports, [{ name: "", port: 53, protocol: "UDP", targetPort: 53 }]);
});

test("Service: headless, ExternalName and unallocated Services have no ClusterIP", (t) => {
  const headless = withField(withField(apiService(), "spec.clusterIP", "None"), "spec.clusterIPs", ["None"]);
  t.deepEqual(record(convertService(headless)).clusterIPs, []);
  const external = {
    metadata: { name: "ext", namespace: "shop" },
    spec: { type: "ExternalName", externalName: "x.y" },
  };
  t.deepEqual(record(convertService(external)), { name: "ext", namespace: "shop", clusterIPs: [], ports: [] });
  const manifest = withField(withField(apiService(), "spec.clusterIP", undefined), "spec.clusterIPs", undefined);
  t.deepEqual(record(convertService(manifest)).clusterIPs, []);
});

test("Service: bad addresses and ports are problems", (t) => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      withField(apiService(), "spec.clusterIPs", ["10.96.0.300"]),
      /^Service shop\/web: spec.clusterIPs has invalid IPs/,
    ],
    [withField(apiService(), "spec.clusterIPs", ["10.96.0.1", "10.96.0.2"]), /two addresses of one family/],
    [withField(apiService(), "spec.ports", [{ name: "a", port: 0 }]), /spec.ports\[0\].port must be a port number/],
    [withField(apiService(), "spec.ports", [{ name: "a", port: 70000 }]), /must be a port number/],
    [
      withField(apiService(), "spec.ports", [{ name: "a", port: 80, protocol: "QUIC" }]),
      /unknown spec.ports\[0\].protocol/,
    ],
    [withField(apiService(), "spec.ports", [{ name: "a", port: 80, targetPort: "8080" }]), /targetPort must be/],
    [withField(apiService(), "spec.ports", [{ name: "a", port: 80, targetPort: -1 }]), /targetPort must be/],
    [withField(apiService(), "spec.ports", [{ port: 80 }, { name: "b", port: 81 }]), /must all be named/],
    [
      withField(apiService(), "spec.ports", [
        { name: "a", port: 80 },
        { name: "a", port: 81 },
      ]),
      /duplicate names/,
    ],
    [
      withField(apiService(), "spec.ports", [
        { name: "a", port: 80 },
        { name: "b", port: 80 },
      ]),
      /a port and protocol twice/,
    ],
    [withField(apiService(), "spec.ports", { http: 80 }), /spec.ports must be an array/],
    [withField(apiService(), "spec.ports", ["80"]), /spec.ports\[0\] must be an object/],
  ];
  for (const [raw, expected] of cases) t.regex(problem(convertService(raw)), expected);
});
