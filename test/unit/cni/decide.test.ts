import test from "ava";
import { type CniSandbox, decideSandbox, staleSandboxes, withSandboxes } from "../../../agent/cni/decide.js";
import { clusterStateOf } from "../../../agent/kube/cluster-state.js";
import { diffEnrollment } from "../../../agent/kube/enrollment-diff.js";
import type { NamespaceRecord, PodRecord } from "../../../agent/kube/records.js";
import { podRecord } from "../../support/records.js";

const sandbox: CniSandbox = { containerId: "s1", netns: "/var/run/netns/cni-1", ips: ["10.0.0.9"] };
const meshedNs: NamespaceRecord = { name: "shop", labels: { "ambit.dev/mesh": "enabled" } };
const plainNs: NamespaceRecord = { name: "shop", labels: {} };
/** As at ADD: placed on the node, no IPs reported yet. */
const pending = (over: Partial<PodRecord> = {}) => podRecord({ name: "web", ips: [], phase: "Pending", ...over });
const state = (pods: PodRecord[], namespaces: NamespaceRecord[] = [meshedNs]) =>
  clusterStateOf({ pods, nodePods: pods, namespaces });

test("a meshed pod is enrolled with the sandbox's namespace path and IPs, its record's labels and identity", (t) => {
  const decision = decideSandbox(state([pending()]), "shop/web", sandbox);
  if (decision.kind !== "enroll") return t.fail(decision.kind);
  t.deepEqual(decision.pod.ips, ["10.0.0.9"]);
  t.is(decision.pod.netns, sandbox.netns);
  t.is(decision.pod.serviceAccount, "web");
  t.is(decision.pod.uid, "uid-web");
});

test("the sandbox's IPs win over the record's (a restarted sandbox's record still has the old ones)", (t) => {
  const decision = decideSandbox(state([pending({ ips: ["10.0.0.3"] })]), "shop/web", sandbox);
  t.like(decision, { kind: "enroll", pod: { ips: ["10.0.0.9"] } });
  const noIps = decideSandbox(state([pending({ ips: ["10.0.0.3"] })]), "shop/web", { ...sandbox, ips: [] });
  t.like(noIps, { kind: "enroll", pod: { ips: ["10.0.0.3"] } });
  t.like(decideSandbox(state([pending()]), "shop/web", { ...sandbox, ips: [] }), { kind: "refuse", code: "no_ips" });
});

test("a pod or namespace the source has not reported yet is waited for; a pod's own label decides without its namespace", (t) => {
  t.deepEqual(decideSandbox(state([]), "shop/web", sandbox), { kind: "wait", missing: "pod" });
  t.deepEqual(decideSandbox(state([pending()], []), "shop/web", sandbox), { kind: "wait", missing: "namespace" });
  const own = (v: string) => pending({ labels: { "ambit.dev/mesh": v } });
  t.like(decideSandbox(state([own("enabled")], []), "shop/web", sandbox), { kind: "enroll" });
  t.like(decideSandbox(state([own("disabled")], []), "shop/web", sandbox), { kind: "not_meshed", reason: "labels" });
});

test("pods outside the mesh: labels, host network, finished", (t) => {
  t.like(decideSandbox(state([pending()], [plainNs]), "shop/web", sandbox), { kind: "not_meshed", reason: "labels" });
  const optOut = pending({ labels: { "ambit.dev/mesh": "disabled" } });
  t.like(decideSandbox(state([optOut]), "shop/web", sandbox), { kind: "not_meshed", reason: "labels" });
  t.like(decideSandbox(state([pending({ hostNetwork: true })]), "shop/web", sandbox), { reason: "host_network" });
  t.like(decideSandbox(state([pending({ phase: "Failed" })]), "shop/web", sandbox), { reason: "finished" });
});

test("the enrolled view: sandboxes stand in for their records, and the diff enrolls the pod, then unenrolls it at DEL", (t) => {
  const source = state([pending(), podRecord({ name: "other", ips: ["10.0.0.4"] })]);
  const sandboxes = new Map([["shop/web", sandbox]]);
  const view = withSandboxes(source, sandboxes);
  t.deepEqual(view.nodePods?.get("shop/web")?.ips, ["10.0.0.9"]);
  t.deepEqual(view.pods.get("shop/web")?.ips, ["10.0.0.9"], "the workload index knows the new IP too");
  t.is(view.pods.get("shop/other"), source.pods.get("shop/other"));
  t.is(withSandboxes(source, new Map()), source, "no sandbox: the same snapshot");
  const added = diffEnrollment(source, view, "node-a");
  t.deepEqual(
    added.enroll.map((p) => p.name),
    ["web"],
  );
  const deleted = diffEnrollment(view, source, "node-a");
  t.deepEqual(
    deleted.unenroll.map((p) => p.name),
    ["web"],
  );
  // The kubelet then reports the same IP: nothing to redo.
  const reported = withSandboxes(state([pending({ ips: ["10.0.0.9"] })]), sandboxes);
  t.deepEqual(diffEnrollment(view, reported, "node-a").reenroll, []);
});

test("a sandbox whose pod's record is gone is stale", (t) => {
  const sandboxes = new Map([
    ["shop/web", sandbox],
    ["shop/gone", sandbox],
  ]);
  t.deepEqual(staleSandboxes(state([pending()]), sandboxes), ["shop/gone"]);
});
