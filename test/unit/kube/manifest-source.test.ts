import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { ManifestSource, parseManifests } from "../../../agent/kube/manifest-source.js";
import { writeFileAtomic } from "../../../agent/sim/index.js";
import { capturingLogger } from "../../support/log-lines.js";

const PODS = `
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {ambit.dev/mesh: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, uid: u1, annotations: {ambit.dev/netns: /var/run/netns/web-1}}
spec: {nodeName: n1, serviceAccountName: web}
status: {phase: Running, podIPs: [{ip: 10.1.1.2}, {ip: "fd00::2"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: shop, uid: u2}
spec: {nodeName: n2}
status: {phase: Running, podIP: 10.1.2.2}
`;

async function dir(t: import("ava").ExecutionContext) {
  const d = await mkdtemp(join(tmpdir(), "ambit-manifests-"));
  t.teardown(() => rm(d, { recursive: true, force: true }));
  return d;
}

test("manifests: YAML documents, JSON Lists, kinds ambit ignores; the node's pods apart", async (t) => {
  const d = await dir(t);
  await writeFile(join(d, "pods.yaml"), PODS);
  const svc = {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "web", namespace: "shop" },
    spec: { clusterIP: "10.96.0.10", ports: [{ port: 80 }] },
  };
  const cm = { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "x", namespace: "shop" } };
  await writeFile(join(d, "more.json"), JSON.stringify({ apiVersion: "v1", kind: "List", items: [svc, cm] }));
  await writeFile(join(d, "notes.txt"), "not a manifest");
  const source = new ManifestSource({ path: d, nodeName: "n1", pollIntervalMs: 0 });
  t.teardown(() => source.close());
  const state = await source.start();
  t.deepEqual([...state.pods.keys()].sort(), ["shop/db-1", "shop/web-1"]);
  t.deepEqual([...(state.nodePods?.keys() ?? [])], ["shop/web-1"]);
  t.like(state.pods.get("shop/web-1"), {
    serviceAccount: "web",
    ips: ["10.1.1.2", "fd00::2"],
    netns: "/var/run/netns/web-1",
  });
  t.is(state.namespaces.get("shop")?.labels["ambit.dev/mesh"], "enabled");
  t.deepEqual(state.services.get("shop/web")?.clusterIPs, ["10.96.0.10"]);
  t.true(source.health().ok);
});

test("followed live; a file that stops parsing keeps its objects and says so; the rest reloads", async (t) => {
  const d = await dir(t);
  const { logger, lines } = capturingLogger("warn");
  await writeFile(join(d, "pods.yaml"), PODS);
  await writeFile(join(d, "ns.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n");
  const source = new ManifestSource({ path: d, logger, pollIntervalMs: 0, debounceMs: 10 });
  t.teardown(() => source.close());
  // The source's watcher and timers never keep a process alive (an agent has its servers for that); this test does.
  const alive = setInterval(() => {}, 1000);
  t.teardown(() => clearInterval(alive));
  await source.start();
  await Promise.all([
    once(source, "change"),
    writeFileAtomic(join(d, "pods.yaml"), PODS.replace("10.1.2.2", "10.1.2.9")),
  ]);
  t.deepEqual(source.current().pods.get("shop/db-1")?.ips, ["10.1.2.9"]);

  await writeFileAtomic(join(d, "pods.yaml"), "kind: Pod\nmetadata: {name: [broken");
  await Promise.all([
    once(source, "change"),
    writeFileAtomic(join(d, "ns.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: renamed}\n"),
  ]);
  t.true(source.current().pods.has("shop/db-1"), "the broken file's objects stay");
  t.true(source.current().namespaces.has("renamed"), "the other file reloaded");
  t.regex(source.health().reasons.join(), /pods\.yaml/);
  t.true(lines.some((l) => String(l.msg).includes("previous objects stay")));
});

test("a path with nothing to read refuses to start", async (t) => {
  const source = new ManifestSource({ path: "/nonexistent/ambit-manifests" });
  await t.throwsAsync(source.start(), { code: "manifests_unreadable" });
});

test("parseManifests reads YAML as kubectl does (1.1) and bounds aliases", (t) => {
  t.like(parseManifests("metadata: {annotations: {mode: 0440}}\n")[0], { metadata: { annotations: { mode: 288 } } });
  const bomb = `a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n`;
  t.throws(() => parseManifests(bomb));
});
