import test from "ava";
import { decodeContinue, listPage } from "../../kube-api/list-page.js";
import { mergePatch } from "../../kube-api/merge-patch.js";
import { pod } from "../../kube-api/objects.js";
import { matchesLabels, parseLabelSelector } from "../../kube-api/selectors.js";
import { eventForWatcher, ObjectStore, StoreError, type StoreEvent, toObject } from "../../kube-api/store.js";
import { reviewToken } from "../../kube-api/token-review.js";

const names = (items: readonly { name: string }[]) => items.map((o) => o.name);
const noSel = { labelSelector: [], fieldSelector: [] };

test("store: one resourceVersion counter across resources; metadata filled; DELETED carries a new RV", (t) => {
  const store = new ObjectStore({ initialResourceVersion: 100, now: () => Date.UTC(2024, 0, 2, 3, 4, 5, 678) });
  const seen: StoreEvent[] = [];
  store.subscribe((e) => seen.push(e));
  const a = store.apply("pods", pod({ name: "a", namespace: "shop" }));
  const ns = store.apply("namespaces", { kind: "Namespace", metadata: { name: "shop", namespace: "ignored" } });
  const a2 = store.apply("pods", { ...pod({ name: "a", namespace: "shop" }), spec: { nodeName: "n1" } });
  const gone = store.delete("pods", "shop", "a");
  t.deepEqual(
    [a.rv, ns.rv, a2.rv, gone.rv, store.resourceVersion],
    [101, 102, 103, 104, 104],
    "every write takes the next global RV",
  );
  t.deepEqual(
    seen.map((e) => `${e.type} ${e.resource} ${e.rv}`),
    ["ADDED pods 101", "ADDED namespaces 102", "MODIFIED pods 103", "DELETED pods 104"],
  );
  const first = toObject(a, "Pod", "v1");
  const second = toObject(a2, "Pod", "v1");
  t.like(first.metadata, {
    name: "a",
    namespace: "shop",
    resourceVersion: "101",
    creationTimestamp: "2024-01-02T03:04:05Z",
  });
  t.regex(first.metadata.uid as string, /^[0-9a-f-]{36}$/);
  t.is(second.metadata.uid, first.metadata.uid, "an update keeps uid and creationTimestamp");
  t.like(toObject(gone, "Pod", "v1"), { metadata: { resourceVersion: "104" }, spec: { nodeName: "n1" } });
  t.is(toObject(ns, "Namespace", "v1").metadata.namespace, undefined, "cluster-scoped objects have no namespace");
  t.is(store.get("pods", "shop", "a"), undefined);
  t.is(seen[3]?.prev?.rv, 103);
});

test("store: create/replace preconditions and validation", (t) => {
  const store = new ObjectStore();
  const a = store.create("pods", pod({ name: "a" }));
  t.is(t.throws(() => store.create("pods", pod({ name: "a" })), { instanceOf: StoreError })?.code, "already_exists");
  const stale = { ...pod({ name: "a" }), metadata: { name: "a", namespace: "default", resourceVersion: "1" } };
  t.is(t.throws(() => store.replace("pods", stale))?.message.includes("the object has been modified"), true);
  const fresh = { ...pod({ name: "a" }), metadata: { name: "a", namespace: "default", resourceVersion: String(a.rv) } };
  t.is(store.replace("pods", fresh).rv, a.rv + 1);
  t.is((t.throws(() => store.replace("pods", pod({ name: "b" }))) as StoreError).code, "not_found");
  t.is((t.throws(() => store.apply("pods", pod({ name: "Bad_Name" }))) as StoreError).code, "invalid");
  t.is((t.throws(() => store.apply("pods", pod({ name: "x", labels: { "a b": "c" } }))) as StoreError).code, "invalid");
  const generated = store.create("pods", { kind: "Pod", metadata: { name: "", generateName: "web-", namespace: "d" } });
  t.regex(generated.name, /^web-[0-9a-f]{5}$/);
});

test("store: events since an RV; history limit and compaction make older RVs expire", (t) => {
  const store = new ObjectStore({ initialResourceVersion: 10, historyLimit: 3 });
  for (const n of ["a", "b", "c", "d", "e"]) store.apply("pods", pod({ name: n })); // RVs 11..15
  t.deepEqual(
    store.eventsSince("pods", 13).map((e) => e.rv),
    [14, 15],
  );
  t.deepEqual(
    store.eventsSince("pods", 12).map((e) => e.rv),
    [13, 14, 15],
  );
  t.is((t.throws(() => store.eventsSince("pods", 11)) as StoreError).code, "expired", "RV 12 was trimmed");
  t.deepEqual(store.eventsSince("pods", 99), [], "a future RV has no events yet");
  store.compact();
  t.deepEqual(store.eventsSince("pods", 15), [], "watching from the current RV still works after compaction");
  t.throws(() => store.eventsSince("pods", 14), { message: "too old resource version: 14 (15)" });
  store.reset();
  t.true(store.resourceVersion > 15);
  t.throws(() => store.eventsSince("pods", 15), { instanceOf: StoreError }, "after a reset every old RV is too old");
  t.is(store.sorted("pods").length, 0);
});

test("store: the state at a past RV is rebuilt from history (adds, updates, deletes, re-creates undone)", (t) => {
  const store = new ObjectStore({ initialResourceVersion: 0 });
  store.apply("pods", pod({ name: "a", labels: { v: "1" } })); // 1
  store.apply("pods", pod({ name: "b" })); // 2
  const at = store.resourceVersion;
  store.apply("pods", pod({ name: "a", labels: { v: "2" } })); // 3
  store.delete("pods", "default", "b"); // 4
  store.apply("pods", pod({ name: "c" })); // 5
  store.apply("pods", pod({ name: "b" })); // 6
  const past = store.sortedAt("pods", at);
  t.deepEqual(names(past), ["a", "b"]);
  t.deepEqual(past[0]?.labels, { v: "1" });
  t.is(past[1]?.rv, 2);
  t.deepEqual(names(store.sortedAt("pods", 4)), ["a"]);
  t.deepEqual(names(store.sortedAt("pods", 6)), ["a", "b", "c"]);
});

test("list pages: limit/continue at a consistent snapshot, namespace ranges, remainingItemCount", (t) => {
  const store = new ObjectStore();
  for (const ns of ["a", "a-b", "b"])
    for (const n of ["p1", "p2", "p3"]) store.apply("pods", pod({ name: n, namespace: ns }));
  const first = listPage(store, "pods", { ...noSel, limit: 4 });
  if (!first.ok) return t.fail();
  t.deepEqual(
    first.items.map((o) => o.key),
    ["a-b/p1", "a-b/p2", "a-b/p3", "a/p1"],
    "keys in byte order, as etcd",
  );
  t.is(first.remainingItemCount, 5);
  t.like(decodeContinue(first.continueToken as string), { rv: first.rv });
  store.delete("pods", "a", "p2");
  store.apply("pods", pod({ name: "p0", namespace: "b" }));
  const second = listPage(store, "pods", { ...noSel, limit: 4, continueToken: first.continueToken });
  if (!second.ok) return t.fail();
  t.deepEqual(
    second.items.map((o) => o.key),
    ["a/p2", "a/p3", "b/p1", "b/p2"],
    "later pages show the first page's snapshot",
  );
  t.is(second.rv, first.rv);
  const ns = listPage(store, "pods", { ...noSel, namespace: "a" });
  t.deepEqual(ns.ok && ns.items.map((o) => o.key), ["a/p1", "a/p3"]);
  t.is(ns.ok && ns.continueToken, undefined);
  const selective = listPage(store, "pods", { ...noSel, labelSelector: parseLabelSelector("x"), limit: 2 });
  t.true(selective.ok && selective.items.length === 0 && selective.continueToken === undefined);
  store.compact();
  const stale = listPage(store, "pods", { ...noSel, limit: 4, continueToken: second.continueToken });
  t.like(stale, { ok: false, status: { code: 410, reason: "Expired" } });
  const token = !stale.ok ? stale.status.metadata.continue : undefined;
  t.like(decodeContinue(token as string), { rv: -1 }, "the 410 carries an inconsistent token from the current state");
  const rest = listPage(store, "pods", { ...noSel, continueToken: token });
  t.deepEqual(rest.ok && rest.items.map((o) => o.key), ["b/p3"]);
});

test("list pages: resourceVersion and resourceVersionMatch rules", (t) => {
  const store = new ObjectStore({ initialResourceVersion: 50 });
  store.apply("pods", pod({ name: "a" })); // 51
  store.apply("pods", pod({ name: "b" })); // 52
  const at = (q: object) => listPage(store, "pods", { ...noSel, ...q });
  t.like(at({ resourceVersion: "51", resourceVersionMatch: "Exact" }), { ok: true, rv: 51 });
  t.like(at({ resourceVersion: "51", limit: 1 }), { ok: true, rv: 51 }, "RV + limit without a match is Exact (legacy)");
  t.like(at({ resourceVersion: "51" }), { ok: true, rv: 52 }, "RV alone is NotOlderThan: the current state");
  t.like(at({ resourceVersion: "0" }), { ok: true, rv: 52 });
  t.like(at({ resourceVersion: "99" }), { ok: false, status: { code: 504, reason: "Timeout" } });
  t.like(at({ resourceVersion: "10", resourceVersionMatch: "Exact" }), { ok: false, status: { code: 410 } });
  t.like(at({ resourceVersionMatch: "Exact" }), { ok: false, status: { code: 400 } });
  t.like(at({ resourceVersion: "0", resourceVersionMatch: "Exact" }), { ok: false, status: { code: 400 } });
  t.like(at({ resourceVersion: "x" }), { ok: false, status: { code: 400 } });
  t.like(at({ continueToken: "garbage" }), { ok: false, status: { code: 400 } });
  const page = at({ limit: 1 });
  const token = page.ok ? page.continueToken : undefined;
  t.like(at({ continueToken: token, resourceVersion: "51" }), { ok: false, status: { code: 400 } });
});

test("watch view of an event: selectors turn updates into ADDED/DELETED for the watcher", (t) => {
  const store = new ObjectStore();
  const events: StoreEvent[] = [];
  store.subscribe((e) => events.push(e));
  const sel = parseLabelSelector("app=web");
  const matches = (o: { labels: Readonly<Record<string, string>> }) => matchesLabels(sel, o.labels);
  store.apply("pods", pod({ name: "p", labels: { app: "db" } }));
  store.apply("pods", pod({ name: "p", labels: { app: "web" } }));
  store.apply("pods", pod({ name: "p", labels: { app: "web", v: "2" } }));
  store.apply("pods", pod({ name: "p", labels: { app: "db" } }));
  store.apply("pods", pod({ name: "p", labels: { app: "web" } }));
  store.delete("pods", "default", "p");
  const seen = events.map((e) => eventForWatcher(e, matches));
  t.deepEqual(
    seen.map((s) => s?.type),
    [undefined, "ADDED", "MODIFIED", "DELETED", "ADDED", "DELETED"],
  );
  const left = seen[3];
  t.is(left?.object.rv, events[3]?.rv, "the DELETED for a watcher carries the event's RV...");
  t.deepEqual(left?.object.labels, { app: "web", v: "2" }, "...and the object's last matching content");
  t.true(left?.object.json.includes(`"resourceVersion":"${events[3]?.rv}"`));
});

test("merge patch: maps merge, null removes, other values replace", (t) => {
  const target = { metadata: { labels: { a: "1", b: "2" } }, spec: { list: [1, 2] } };
  t.deepEqual(mergePatch(target, { metadata: { labels: { a: null, c: "3" } }, spec: { list: [3] } }), {
    metadata: { labels: { b: "2", c: "3" } },
    spec: { list: [3] },
  });
  t.deepEqual(target.metadata.labels, { a: "1", b: "2" }, "the target is not modified");
});

test("TokenReview: table lookup, audiences intersected, the real response shape", (t) => {
  const table = new Map([
    [
      "agent",
      { user: { username: "system:serviceaccount:ambit:agent", uid: "u1", groups: ["g"] }, audiences: ["ambit-ca"] },
    ],
    ["plain", { user: { username: "someone" } }],
  ]);
  const ask = (spec: object) =>
    reviewToken({ apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", spec }, table);
  t.like(ask({ token: "agent", audiences: ["other", "ambit-ca"] }), {
    code: 201,
    body: {
      kind: "TokenReview",
      apiVersion: "authentication.k8s.io/v1",
      spec: { token: "agent", audiences: ["other", "ambit-ca"] },
      status: {
        authenticated: true,
        user: { username: "system:serviceaccount:ambit:agent", uid: "u1" },
        audiences: ["ambit-ca"],
      },
    },
  });
  const wrongAudience = ask({ token: "agent" }).body as { status: Record<string, unknown> };
  t.is(wrongAudience.status.authenticated, undefined, "false is omitted, as in the real JSON");
  t.regex(wrongAudience.status.error as string, /token audiences/);
  t.like(ask({ token: "plain" }).body, {
    status: { authenticated: true, audiences: ["https://kubernetes.default.svc.cluster.local"] },
  });
  t.like(ask({ token: "nope" }).body, { status: { user: {} } });
  t.is(reviewToken({ kind: "TokenReview", spec: {} }, table).code, 400);
  t.is(reviewToken("junk", table).code, 400);
});
