import test from "ava";
import { findPod, findPodByIp } from "../../../agent/kube/cluster-lookup.js";
import { diffEnrollment, enrolledPods, isEmptyDiff } from "../../../agent/kube/enrollment-diff.js";
import { type ClusterState, MESH_LABEL, type PodSpec } from "../../../agent/kube/pod.js";

const pod = (name: string, extra: Partial<PodSpec> = {}): PodSpec => ({
  name,
  namespace: "shop",
  serviceAccount: "web",
  nodeName: "node-a",
  labels: { [MESH_LABEL]: "enabled" },
  netns: `/var/run/netns/${name}`,
  ips: ["10.0.0.2"],
  ...extra,
});
const state = (pods: PodSpec[], nsLabels: Record<string, string> = {}): ClusterState => ({
  namespaces: [{ name: "shop", labels: nsLabels }],
  pods,
});
const names = (pods: PodSpec[]) => pods.map((p) => p.name).sort();

test("from nothing: enroll this node's meshed pods only", (t) => {
  const next = state([pod("a"), pod("b", { nodeName: "node-b" }), pod("c", { labels: {} })]);
  const d = diffEnrollment(state([]), next, "node-a");
  t.deepEqual(names(d.enroll), ["a"]);
  t.deepEqual([d.unenroll, d.reenroll, d.updated], [[], [], []]);
  t.deepEqual(names(enrolledPods(next, "node-a")), ["a"]);
});

test("no change: empty diff", (t) => {
  const s = state([pod("a")]);
  const d = diffEnrollment(s, structuredClone(s), "node-a");
  t.true(isEmptyDiff(d));
});

test("opt-out label and deletion unenroll with the previous spec", (t) => {
  const prev = state([pod("a"), pod("b")]);
  const next = state([pod("a", { labels: { [MESH_LABEL]: "disabled" } })]);
  const d = diffEnrollment(prev, next, "node-a");
  t.deepEqual(names(d.unenroll), ["a", "b"]);
  t.deepEqual(d.enroll, []);
});

test("namespace label enrolls and unenrolls all its unlabelled pods", (t) => {
  const plain = [pod("a", { labels: {} }), pod("b", { labels: { [MESH_LABEL]: "disabled" } })];
  const d1 = diffEnrollment(state(plain), state(plain, { [MESH_LABEL]: "enabled" }), "node-a");
  t.deepEqual(names(d1.enroll), ["a"]);
  const d2 = diffEnrollment(state(plain, { [MESH_LABEL]: "enabled" }), state(plain), "node-a");
  t.deepEqual(names(d2.unenroll), ["a"]);
});

test("changed netns or IPs re-enroll; IP order does not matter", (t) => {
  const prev = state([pod("a", { ips: ["10.0.0.2", "fd00::2"] }), pod("b"), pod("c")]);
  const next = state([
    pod("a", { ips: ["fd00::2", "10.0.0.2"] }),
    pod("b", { netns: "/proc/42/ns/net" }),
    pod("c", { ips: ["10.0.0.9"] }),
  ]);
  const d = diffEnrollment(prev, next, "node-a");
  t.deepEqual(
    d.reenroll.map((c) => c.current.name),
    ["b", "c"],
  );
  t.is(d.reenroll[0]?.previous.netns, "/var/run/netns/b");
  t.deepEqual([d.enroll, d.unenroll, d.updated], [[], [], []]);
});

test("identity or policy changes are updates, not re-enrollments", (t) => {
  const prev = state([pod("a"), pod("b")]);
  const next: ClusterState = {
    namespaces: [{ name: "shop", labels: {}, peerAuthentication: "STRICT" }],
    pods: [pod("a", { serviceAccount: "admin" }), pod("b")],
  };
  const d = diffEnrollment(prev, next, "node-a");
  // a: new service account; b: effective mode PERMISSIVE -> STRICT through the namespace.
  t.deepEqual(
    d.updated.map((c) => c.current.name),
    ["a", "b"],
  );
  t.deepEqual(d.reenroll, []);
});

test("a pod moving to another node is unenrolled here", (t) => {
  const d = diffEnrollment(state([pod("a")]), state([pod("a", { nodeName: "node-b" })]), "node-a");
  t.deepEqual(names(d.unenroll), ["a"]);
});

test("findPod and findPodByIp", (t) => {
  const s = state([pod("a", { ips: ["10.0.0.2", "fd00:0:0::2"] }), pod("b", { ips: ["10.0.0.3"] })]);
  t.is(findPod(s, "shop", "b")?.name, "b");
  t.is(findPod(s, "other", "b"), undefined);
  t.is(findPodByIp(s, "fd00::2")?.name, "a");
  t.is(findPodByIp(s, "::ffff:10.0.0.3")?.name, "b");
  t.is(findPodByIp(s, "10.0.0.4"), undefined);
  t.is(findPodByIp(s, "garbage"), undefined);
});
