import { once } from "node:events";
import test from "ava";
import type { ClusterState } from "../../../agent/kube/cluster-state.js";
import { ClusterStore } from "../../../agent/kube/cluster-store.js";
import { capturingLogger } from "../../support/log-lines.js";

const pod = (
  name: string,
  over: { ip?: string; labels?: Record<string, string>; deleting?: boolean; uid?: string } = {},
) => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: {
    name,
    namespace: "shop",
    uid: over.uid ?? `uid-${name}`,
    labels: over.labels ?? {},
    ...(over.deleting ? { deletionTimestamp: "2026-11-30T00:00:00Z" } : {}),
  },
  spec: { nodeName: "n1" },
  status: { phase: "Running", ...(over.ip === "" ? {} : { podIPs: [{ ip: over.ip ?? "10.0.0.2" }] }) },
});
const strict = (mode: string) => ({
  apiVersion: "security.istio.io/v1",
  kind: "PeerAuthentication",
  metadata: { name: "default", namespace: "shop" },
  spec: { mtls: { mode } },
});

function store() {
  const { logger, lines } = capturingLogger("warn");
  const s = new ClusterStore({ logger });
  const changes: ClusterState[] = [];
  s.on("change", (state) => changes.push(state));
  return { s, lines, changes, settle: () => new Promise((r) => setImmediate(r)) };
}

test("a burst of changes is one snapshot; an unchanged object is no change", async (t) => {
  const { s, changes, settle } = store();
  for (let i = 0; i < 100; i++) s.upsert("pods", pod(`p${i}`));
  await once(s, "change");
  t.is(changes.length, 1);
  t.is(changes[0]?.pods.size, 100);
  s.upsert("pods", pod("p1"));
  await settle();
  t.is(changes.length, 1, "the same object again changes nothing");
  s.remove("pods", pod("p1"));
  await once(s, "change");
  t.false(changes[1]?.pods.has("shop/p1"));
});

test("an invalid update never replaces the valid version in force, and says so", async (t) => {
  const { s, lines, settle } = store();
  s.upsert("peerAuthentications", strict("STRICT"));
  await settle();
  s.upsert("peerAuthentications", strict("STRCT"));
  await settle();
  t.is(s.snapshot().peerAuthentications.get("shop/default")?.mtls, "STRICT");
  const warned = lines.find((l) => String(l.msg).includes("previous valid version stays"));
  t.regex(String(warned?.problem), /STRCT/);
  // A new invalid object is skipped; nothing was in force to keep.
  s.upsert("peerAuthentications", { ...strict("NOPE"), metadata: { name: "other", namespace: "shop" } });
  await settle();
  t.false(s.snapshot().peerAuthentications.has("shop/other"));
});

test("a relist swaps the set without flapping: unchanged records stay the same objects", async (t) => {
  const { s, changes } = store();
  s.replace("pods", [pod("a"), pod("b"), pod("c")]);
  await once(s, "change");
  const before = s.snapshot().pods;
  s.replace("pods", [pod("a"), pod("b", { labels: { app: "b" } })]);
  await once(s, "change");
  const after = s.snapshot().pods;
  t.is(after.get("shop/a"), before.get("shop/a"), "a is the very same record");
  t.not(after.get("shop/b"), before.get("shop/b"));
  t.false(after.has("shop/c"));
  s.replace("pods", [pod("a"), pod("b", { labels: { app: "b" } })]);
  await new Promise((r) => setImmediate(r));
  t.is(changes.length, 2, "an identical relist emits nothing");
});

test("a terminating pod that lost its IPs keeps the last known ones; a new pod under the name does not", async (t) => {
  const { s, settle } = store();
  s.upsert("pods", pod("a", { ip: "10.0.0.7" }));
  s.upsert("pods", pod("a", { ip: "", deleting: true }));
  await settle();
  t.deepEqual(s.snapshot().pods.get("shop/a")?.ips, ["10.0.0.7"]);
  s.upsert("pods", pod("a", { ip: "", uid: "recreated" }));
  await settle();
  t.deepEqual(s.snapshot().pods.get("shop/a")?.ips, []);
});
