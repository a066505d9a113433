import test from "ava";
import { type ClusterState, clusterStateOf } from "../../../agent/kube/cluster-state.js";
import { diffEnrollment, enrolledPods, isEmptyDiff } from "../../../agent/kube/enrollment-diff.js";
import { MESH_LABEL } from "../../../agent/kube/mesh-selection.js";
import type { PodRecord } from "../../../agent/kube/records.js";
import { podRecord } from "../../support/records.js";

const pod = (name: string, extra: Partial<PodRecord> = {}): PodRecord =>
  podRecord({ name, labels: { [MESH_LABEL]: "enabled" }, netns: `/var/run/netns/${name}`, ...extra });
const state = (pods: PodRecord[], nsLabels: Record<string, string> = {}): ClusterState =>
  clusterStateOf({ namespaces: [{ name: "shop", labels: nsLabels }], pods });
const names = (pods: PodRecord[]) => pods.map((p) => p.name).sort();

test("from nothing: enroll this node's meshed pods only", (t) => {
  const next = state([pod("a"), pod("b", { nodeName: "node-b" }), pod("c", { labels: {} })]);
  const d = diffEnrollment(state([]), next, "node-a");
  t.deepEqual(names(d.enroll), ["a"]);
  t.deepEqual([d.unenroll, d.reenroll, d.updated], [[], [], []]);
  t.deepEqual(names(enrolledPods(next, "node-a")), ["a"]);
});

test("no change: empty diff", (t) => {
  const s = state([pod("a")]);
  t.true(isEmptyDiff(diffEnrollment(s, state([pod("a")]), "node-a")));
});

test("opt-out label and deletion unenroll with the previous record", (t) => {
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

test("hostNetwork pods are never enrolled; pods wait for IPs; finished pods leave", (t) => {
  const next = state([
    pod("host", { hostNetwork: true }),
    pod("waiting", { ips: [], phase: "Pending" }),
    pod("starting", { phase: "Pending" }),
    pod("done", { phase: "Succeeded" }),
    pod("failed", { phase: "Failed" }),
  ]);
  t.deepEqual(names(diffEnrollment(state([]), next, "node-a").enroll), ["starting"]);
  const finished = diffEnrollment(state([pod("done")]), next, "node-a");
  t.deepEqual(names(finished.unenroll), ["done"]);
});

test("a terminating pod stays enrolled while it has IPs", (t) => {
  const d = diffEnrollment(state([pod("a")]), state([pod("a", { terminating: true })]), "node-a");
  t.true(isEmptyDiff(d));
});

test("a new sandbox (uid, netns or IPs changed) re-enrolls; IP order does not matter", (t) => {
  const prev = state([pod("a", { ips: ["10.0.0.2", "fd00::2"] }), pod("b"), pod("c"), pod("d")]);
  const next = state([
    pod("a", { ips: ["fd00::2", "10.0.0.2"] }),
    pod("b", { netns: "/proc/42/ns/net" }),
    pod("c", { ips: ["10.0.0.9"] }),
    pod("d", { uid: "another-sandbox" }),
  ]);
  const d = diffEnrollment(prev, next, "node-a");
  t.deepEqual(d.reenroll.map((c) => c.current.name).sort(), ["b", "c", "d"]);
  t.is(d.reenroll.find((c) => c.current.name === "b")?.previous.netns, "/var/run/netns/b");
  t.deepEqual([d.enroll, d.unenroll, d.updated], [[], [], []]);
});

test("identity, workload or label changes are updates, not re-enrollments", (t) => {
  const prev = state([pod("a"), pod("b"), pod("c")]);
  const next = state([
    pod("a", { serviceAccount: "admin" }),
    pod("b", { labels: { [MESH_LABEL]: "enabled", app: "b" } }),
    pod("c", { workload: "c-set" }),
  ]);
  const d = diffEnrollment(prev, next, "node-a");
  t.deepEqual(d.updated.map((c) => c.current.name).sort(), ["a", "b", "c"]);
  t.deepEqual(d.reenroll, []);
});

test("a pod moving to another node is unenrolled here", (t) => {
  const d = diffEnrollment(state([pod("a")]), state([pod("a", { nodeName: "node-b" })]), "node-a");
  t.deepEqual(names(d.unenroll), ["a"]);
});

test("the node's own watch, when there is one, decides which pods are this node's", (t) => {
  const everyPod = [pod("a"), pod("b")];
  const withNodeWatch = clusterStateOf({
    namespaces: [{ name: "shop", labels: {} }],
    pods: everyPod,
    nodePods: [pod("a")],
  });
  t.deepEqual(names(enrolledPods(withNodeWatch, "node-a")), ["a"]);
});
