import test from "ava";
import { namespace, peerAuthentication, pod } from "../../kube-api/objects.js";
import { KubeApiServer, type KubeApiServerOptions } from "../../kube-api/server.js";
import { call, changes, Watch } from "./client.js";

async function server(t: import("ava").ExecutionContext, options: KubeApiServerOptions = {}) {
  const s = await KubeApiServer.start(options);
  t.teardown(() => s.close());
  return s;
}

function watch(t: import("ava").ExecutionContext, s: KubeApiServer, path: string) {
  const w = new Watch(s, path);
  t.teardown(() => w.close());
  return w;
}

test("watch from a list's RV gets exactly the later changes, in order; DELETED has the last state at a new RV", async (t) => {
  const s = await server(t);
  s.apply(pod({ name: "before", namespace: "shop" }));
  const list = await call(s, "/api/v1/namespaces/shop/pods");
  const rv = list.body.metadata.resourceVersion;
  s.apply(pod({ name: "a", namespace: "shop", labels: { v: "1" } })); // between list and watch: still delivered
  const w = watch(t, s, `/api/v1/namespaces/shop/pods?watch=1&resourceVersion=${rv}`);
  const res = await w.response;
  t.is(res.statusCode, 200);
  t.regex(res.headers["content-type"] ?? "", /^application\/json/);
  t.is(res.headers["transfer-encoding"], "chunked");
  await s.waitForWatches(1, "pods");
  s.patchLabels("Pod", "shop", "a", { v: "2" });
  s.apply(pod({ name: "other", namespace: "bank" })); // another namespace: not for this watch
  s.delete("Pod", "shop", "a");
  const events = await w.waitFor(3);
  t.deepEqual(changes(events), ["ADDED a", "MODIFIED a", "DELETED a"]);
  const [added, modified, deleted] = events;
  t.like(added?.object, { kind: "Pod", apiVersion: "v1", metadata: { labels: { v: "1" } } });
  t.is(modified?.object.metadata.labels.v, "2");
  t.is(deleted?.object.metadata.labels.v, "2", "DELETED carries the last state");
  const rvs = events.map((e) => Number(e.object.metadata.resourceVersion));
  t.true(rvs[0] > Number(rv) && rvs[1] > rvs[0] && rvs[2] > rvs[1], `increasing RVs, each new: ${rvs}`);
  t.is(String(rvs[2]), s.resourceVersion, "the deletion took the latest RV");
  await new Promise((r) => setTimeout(r, 100));
  t.is(w.events.length, 3, "nothing else: no bookmarks unless asked for, no other namespaces");
});

test('watch from RV "0" or unset starts with ADDED for current objects, then live events', async (t) => {
  const s = await server(t);
  s.applyAll([pod({ name: "a" }), pod({ name: "b" }), namespace("default")]);
  for (const q of ["watch=true&resourceVersion=0", "watch=1"]) {
    const w = watch(t, s, `/api/v1/pods?${q}`);
    await w.waitFor(2);
    t.deepEqual(changes(w.events), ["ADDED a", "ADDED b"], q);
    t.is(w.events[0]?.object.metadata.resourceVersion, s.get("Pod", "default", "a")?.metadata.resourceVersion);
  }
  await s.waitForWatches(2, "pods");
  s.apply(pod({ name: "c" }));
  t.is(s.requestCount("watch", "pods"), 2);
  const w0 = watch(
    t,
    s,
    "/api/v1/pods?watch=1&resourceVersion=0&sendInitialEvents=false&resourceVersionMatch=NotOlderThan",
  );
  await s.waitForWatches(3, "pods");
  s.apply(pod({ name: "d" }));
  await w0.waitFor(1);
  t.deepEqual(changes(w0.events), ["ADDED d"], "sendInitialEvents=false: only what happens from now on");
});

test("sendInitialEvents=true: the current state, then a BOOKMARK annotated initial-events-end", async (t) => {
  const s = await server(t, { bookmarkIntervalMs: 60_000 });
  s.applyAll([pod({ name: "a" }), pod({ name: "b" })]);
  const rv = s.resourceVersion;
  const w = watch(
    t,
    s,
    "/api/v1/pods?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&resourceVersion=",
  );
  await w.waitFor(3);
  t.deepEqual(
    w.events.map((e) => e.type),
    ["ADDED", "ADDED", "BOOKMARK"],
  );
  t.deepEqual(w.events[2]?.object, {
    kind: "Pod",
    apiVersion: "v1",
    metadata: { resourceVersion: rv, annotations: { "k8s.io/initial-events-end": "true" } },
  });
  const bad = await call(s, "/api/v1/pods?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan");
  t.like(bad, { status: 400, body: { kind: "Status", reason: "BadRequest" } }, "initial events need bookmarks");
});

test("bookmarks: periodic when asked for, only metadata.resourceVersion on an object of the watched kind", async (t) => {
  const s = await server(t, { bookmarkIntervalMs: 100 });
  const w = watch(
    t,
    s,
    "/apis/security.istio.io/v1beta1/peerauthentications?watch=1&allowWatchBookmarks=true&resourceVersion=0",
  );
  await w.waitUntil((es) => es.filter((e) => e.type === "BOOKMARK").length >= 2, "two bookmarks");
  const bookmark = w.events.find((e) => e.type === "BOOKMARK");
  t.deepEqual(bookmark?.object, {
    kind: "PeerAuthentication",
    apiVersion: "security.istio.io/v1beta1",
    metadata: { resourceVersion: s.resourceVersion },
  });
  s.apply(pod({ name: "unrelated" })); // another resource moves the global RV; the next bookmark says so
  const rv = s.resourceVersion;
  await w.waitUntil(
    (es) => es.some((e) => e.type === "BOOKMARK" && e.object.metadata.resourceVersion === rv),
    "new RV",
  );
  t.deepEqual(changes(w.events), [], "bookmarks only");
  const plain = watch(t, s, `/api/v1/pods?watch=1&resourceVersion=${rv}`);
  await new Promise((r) => setTimeout(r, 350));
  t.deepEqual(plain.events, [], "no bookmarks without allowWatchBookmarks");
});

test("timeoutSeconds ends the stream cleanly (final chunk); the server's maximum caps it", async (t) => {
  const s = await server(t, { maxWatchTimeoutSeconds: 1 });
  const started = Date.now();
  const asked = watch(t, s, "/api/v1/pods?watch=1&timeoutSeconds=1");
  const capped = watch(t, s, "/api/v1/pods?watch=1&timeoutSeconds=3600");
  const unset = watch(t, s, "/api/v1/pods?watch=1");
  t.deepEqual(await asked.end(), { complete: true });
  t.deepEqual(await capped.end(), { complete: true });
  t.deepEqual(await unset.end(), { complete: true });
  const took = Date.now() - started;
  t.true(took >= 900 && took < 10_000, `ended after ${took} ms`);
  t.is(s.openWatches(), 0);
  t.like(await call(s, "/api/v1/pods?watch=1&timeoutSeconds=soon"), { status: 400 });
});

test("a watch from an RV older than the kept history gets an ERROR event with a 410 Expired Status, then ends", async (t) => {
  const s = await server(t);
  s.apply(pod({ name: "a" }));
  const old = s.resourceVersion;
  s.apply(pod({ name: "b" }));
  s.compact();
  const w = watch(t, s, `/api/v1/pods?watch=1&resourceVersion=${old}&allowWatchBookmarks=true`);
  t.is((await w.response).statusCode, 200, "the real server answers 200 and reports the error in the stream");
  t.deepEqual(await w.end(), { complete: true });
  t.is(w.events.length, 1);
  t.like(w.events[0], {
    type: "ERROR",
    object: { kind: "Status", apiVersion: "v1", status: "Failure", reason: "Expired", code: 410 },
  });
  t.regex(w.events[0]?.object.message, /^too old resource version: \d+ \(\d+\)$/);
  const current = watch(t, s, `/api/v1/pods?watch=1&resourceVersion=${s.resourceVersion}`);
  await s.waitForWatches(1, "pods");
  s.apply(pod({ name: "c" }));
  await current.waitFor(1);
  t.deepEqual(changes(current.events), ["ADDED c"], "the current RV is still good after compaction");

  const small = await server(t, { historyLimit: 5 });
  const start = small.resourceVersion;
  small.applyAll(Array.from({ length: 10 }, (_, i) => pod({ name: `p${i}` })));
  const tooOld = watch(t, small, `/api/v1/pods?watch=1&resourceVersion=${start}`);
  await tooOld.end();
  t.is(tooOld.events[0]?.object.code, 410, "history beyond the limit is forgotten too");
});

test("selectors on watches: leaving the selection is DELETED, entering it ADDED; fieldSelector spec.nodeName", async (t) => {
  const s = await server(t);
  const rv = s.resourceVersion;
  const meshed = watch(
    t,
    s,
    `/api/v1/pods?watch=1&resourceVersion=${rv}&labelSelector=${encodeURIComponent("ambit.dev/mesh=enabled")}`,
  );
  const onNode = watch(
    t,
    s,
    `/api/v1/pods?watch=1&resourceVersion=${rv}&fieldSelector=${encodeURIComponent("spec.nodeName=node-a")}`,
  );
  await s.waitForWatches(2);
  s.apply(pod({ name: "p", nodeName: "node-a", labels: { app: "web" } }));
  s.patchLabels("Pod", "default", "p", { "ambit.dev/mesh": "enabled" });
  s.patchLabels("Pod", "default", "p", { app: "web2" });
  s.patchLabels("Pod", "default", "p", { "ambit.dev/mesh": "disabled" });
  s.apply(pod({ name: "q", nodeName: "node-b", labels: { "ambit.dev/mesh": "enabled" } }));
  s.delete("Pod", "default", "q");
  await meshed.waitFor(5);
  t.deepEqual(changes(meshed.events), ["ADDED p", "MODIFIED p", "DELETED p", "ADDED q", "DELETED q"]);
  const left = meshed.events[2]?.object;
  t.is(left.metadata.labels["ambit.dev/mesh"], "enabled", "the DELETED shows the last state the watcher could see");
  t.is(left.metadata.resourceVersion, s.get("Pod", "default", "p")?.metadata.resourceVersion, "at the change's RV");
  await onNode.waitFor(4);
  t.deepEqual(changes(onNode.events), ["ADDED p", "MODIFIED p", "MODIFIED p", "MODIFIED p"]);
  t.like(await call(s, "/api/v1/pods?watch=1&fieldSelector=status.nope%3Dx"), { status: 400 });
});

test("watches follow one global RV: a pods watch may start from a namespaces list's RV", async (t) => {
  const s = await server(t);
  s.apply(namespace("shop"));
  const nsList = await call(s, "/api/v1/namespaces");
  s.apply(pod({ name: "a", namespace: "shop" }));
  const w = watch(t, s, `/api/v1/pods?watch=1&resourceVersion=${nsList.body.metadata.resourceVersion}`);
  await w.waitFor(1);
  t.deepEqual(changes(w.events), ["ADDED a"]);
  const istio = watch(
    t,
    s,
    `/apis/security.istio.io/v1beta1/namespaces/shop/peerauthentications?watch=1&resourceVersion=${s.resourceVersion}`,
  );
  await s.waitForWatches(1, "peerauthentications");
  s.apply(peerAuthentication({ name: "default", namespace: "shop", mode: "STRICT" }));
  await istio.waitFor(1);
  t.like(istio.events[0]?.object, { kind: "PeerAuthentication", apiVersion: "security.istio.io/v1beta1" });
});
