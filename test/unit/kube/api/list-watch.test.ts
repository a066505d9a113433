import test from "ava";
import { namespace, pod } from "../../../kube-api/objects.js";
import { apiServer, PODS, serverKeys, source, until } from "./support.js";

/** list + watch of one resource against the test API server: pagination, order, selectors, resourceVersions. */

test("the first list is paginated (1,200 pods, limit 500: 3 pages) and replaces the sink's state in one call", async (t) => {
  const api = await apiServer(t);
  api.applyAll(
    Array.from({ length: 1200 }, (_, i) => pod({ name: `p-${String(i).padStart(4, "0")}`, namespace: "shop" })),
  );
  const { source: s, sink } = await source(t, api);
  await s.start();
  t.is(api.requestCount("list", "pods"), 3, "3 pages of at most 500");
  const replaces = sink.calls.filter((c) => c.op === "replace");
  t.is(replaces.length, 1, "one replace with everything, not one per page");
  t.is(replaces[0]?.names.length, 1200);
  t.deepEqual(sink.keys("pods"), serverKeys(api, "Pod"));
  const first = sink.get("pods", "shop/p-0000");
  t.like(first, { kind: "Pod", apiVersion: "v1" }, "list items get back the kind/apiVersion the server strips");
  const st = s.status()[0];
  t.like(st, { listed: true, relists: 0, path: "/api/v1/pods", resourceVersion: api.resourceVersion });
  await api.waitForWatches(1, "pods");
  t.is(api.requestCount("watch", "pods"), 1);
});

test("events arrive in the order they happened, each advancing the resourceVersion", async (t) => {
  const api = await apiServer(t);
  api.apply(pod({ name: "b" }));
  const { source: s, sink } = await source(t, api);
  await s.start();
  await api.waitForWatches(1, "pods");
  api.apply(pod({ name: "a" }));
  api.patchLabels("Pod", "default", "a", { app: "web" });
  api.delete("Pod", "default", "b");
  api.apply(pod({ name: "c" }));
  await until(
    () => sink.calls.length >= 5,
    "4 events after the list",
    5000,
    () => sink.log("pods"),
  );
  t.deepEqual(sink.log("pods"), [
    "replace default/b",
    "upsert default/a",
    "upsert default/a",
    "remove default/b",
    "upsert default/c",
  ]);
  t.deepEqual(sink.get("pods", "default/a").metadata.labels, { app: "web" });
  t.is(s.status()[0]?.resourceVersion, api.resourceVersion);
  t.is(api.requestCount("list", "pods"), 1);
});

test("nodePods: the field selector limits list and watch to the node's pods", async (t) => {
  const api = await apiServer(t);
  api.applyAll([
    pod({ name: "a1", nodeName: "node-a" }),
    pod({ name: "b1", nodeName: "node-b" }),
    pod({ name: "pending" }),
  ]);
  const nodePods = { resource: "nodePods", paths: ["/api/v1/pods"], fieldSelector: "spec.nodeName=node-a" };
  const { source: s, sink } = await source(t, api, { resources: [PODS, nodePods] });
  await s.start();
  t.deepEqual(sink.keys("nodePods"), ["default/a1"]);
  t.deepEqual(sink.keys("pods"), ["default/a1", "default/b1", "default/pending"]);
  await api.waitForWatches(2, "pods");
  api.apply(pod({ name: "b2", nodeName: "node-b" }));
  api.apply(pod({ name: "a2", nodeName: "node-a" }));
  await until(() => sink.keys("pods").length === 5, "both new pods in pods");
  await until(() => sink.keys("nodePods").length === 2, "a2 in nodePods");
  t.deepEqual(sink.keys("nodePods"), ["default/a1", "default/a2"]);
  t.deepEqual(sink.log("nodePods"), ["replace default/a1", "upsert default/a2"], "b2 was never delivered");
});

test("bookmarks advance the resourceVersion: after compaction a dropped watch resumes from the bookmark, no relist", async (t) => {
  const api = await apiServer(t, { bookmarkIntervalMs: 50 });
  api.apply(pod({ name: "a" }));
  const { source: s, sink } = await source(t, api);
  await s.start();
  const listRv = s.status()[0]?.resourceVersion;
  // Changes to another resource move the cluster's resourceVersion on; the pods watch learns it by bookmark only.
  for (let i = 0; i < 5; i++) api.apply(namespace(`ns-${i}`));
  await until(() => s.status()[0]?.resourceVersion === api.resourceVersion, "a bookmark at the newest RV");
  t.not(s.status()[0]?.resourceVersion, listRv);
  api.compact(); // the list's RV is now too old to watch from; the bookmark's is not
  api.dropWatches();
  await until(() => api.requestCount("watch", "pods") >= 2 && api.openWatches("pods") === 1, "re-watch");
  api.apply(pod({ name: "b" }));
  await until(() => sink.keys("pods").length === 2, "b arrives on the new watch");
  t.is(api.requestCount("list", "pods"), 1, "no relist");
  t.like(s.status()[0], { relists: 0, restarts: { expired: 0, error: 1 } });
  t.true(
    sink.calls.every((c) => c.op !== "replace" || c.names.length === 1),
    "a single replace, the first list",
  );
});

test("dropWatches while writing: every change arrives, from the last resourceVersion, without a relist", async (t) => {
  const api = await apiServer(t);
  const { source: s, sink } = await source(t, api);
  await s.start();
  for (let round = 0; round < 5; round++) {
    await api.waitForWatches(1, "pods");
    for (let i = 0; i < 20; i++) api.apply(pod({ name: `r${round}-${i}` }));
    if (round > 0) api.delete("Pod", "default", `r${round - 1}-0`);
    api.dropWatches();
    for (let i = 20; i < 30; i++) api.apply(pod({ name: `r${round}-${i}` })); // while nobody watches
  }
  await until(
    () => sink.keys("pods").join() === serverKeys(api, "Pod").join(),
    "the sink converges on the server's pods",
    10_000,
    () => [sink.keys("pods").length, api.list("Pod").length],
  );
  t.is(api.requestCount("list", "pods"), 1, "resumed from resourceVersions, never relisted");
  t.is(s.status()[0]?.restarts.error, 5);
  t.is(sink.calls.filter((c) => c.op === "upsert").length, 150, "each ADDED exactly once: nothing replayed twice");
  t.is(sink.calls.filter((c) => c.op === "remove").length, 4);
});

test("the planned end of a watch (timeoutSeconds) re-watches at once from the last resourceVersion", async (t) => {
  const api = await apiServer(t);
  const { source: s, sink } = await source(t, api, { timing: { watchTimeoutSeconds: { min: 1, max: 1 } } });
  await s.start();
  await until(() => (s.status()[0]?.restarts.timeout ?? 0) >= 2, "two planned rotations", 6000);
  api.apply(pod({ name: "x" }));
  await until(() => sink.keys("pods").length === 1, "events still arrive");
  t.is(api.requestCount("list", "pods"), 1);
  t.is(s.status()[0]?.lastError, undefined, "a planned end is not an error");
});

test("a server that ends every watch at once is not hammered: early ends back off", async (t) => {
  // maxWatchTimeoutSeconds 0: the server ends each watch as soon as it opens (the informer's tight loop, #1933).
  const api = await apiServer(t, { maxWatchTimeoutSeconds: 0 });
  const { source: s } = await source(t, api, { timing: { backoff: { baseMs: 50, capMs: 400 } } });
  await s.start();
  await until(() => (s.status()[0]?.restarts.closed ?? 0) >= 3, "a few early ends");
  const before = api.requestCount("watch", "pods");
  await new Promise((r) => setTimeout(r, 1500));
  const during = api.requestCount("watch", "pods") - before;
  // With the cap at 400 ms, full jitter averages 200 ms: ~8 in 1.5 s. A loop without backoff makes hundreds.
  t.true(during <= 40, `${during} watch requests in 1.5 s`);
  t.true(during >= 1, "it does keep trying");
});
