import test from "ava";
import { peerAuthentication, pod } from "../../../kube-api/objects.js";
import { capturingLogger } from "../../../support/log-lines.js";
import { apiServer, PODS, serverKeys, source, until } from "./support.js";

/** The list-watch under the test API server's faults: stalls, compaction, outages, refusals, missing paths. */

test("stallWatches: the watchdog cuts the silent watch; what happened during the stall arrives after it", async (t) => {
  const api = await apiServer(t, { bookmarkIntervalMs: 100 });
  api.apply(pod({ name: "a" }));
  const { source: s, sink } = await source(t, api, { timing: { stallMs: 400 } });
  await s.start();
  await api.waitForWatches(1, "pods");
  api.stallWatches();
  api.apply(pod({ name: "b" }));
  api.delete("Pod", "default", "a");
  await until(() => (s.status()[0]?.restarts.stalled ?? 0) >= 1, "the watchdog fired", 5000);
  t.deepEqual(sink.keys("pods"), ["default/a"], "nothing arrived while stalled, nothing was removed either");
  api.resumeWatches();
  await until(
    () => sink.keys("pods").join() === "default/b",
    "the stall's changes arrive",
    10_000,
    () => sink.log("pods"),
  );
  t.is(api.requestCount("list", "pods"), 1, "a stall re-watches from the last resourceVersion, no relist");
  t.regex(s.status()[0]?.lastError?.message ?? "", /no event and no bookmark for 400 ms/);
});

test("an outage with compaction: 410 on re-watch, exactly one relist, replace() with the full current set", async (t) => {
  const api = await apiServer(t);
  api.applyAll([pod({ name: "keep" }), pod({ name: "gone" }), pod({ name: "changed" })]);
  const { source: s, sink } = await source(t, api);
  await s.start();
  await api.waitForWatches(1, "pods");
  await api.stop();
  // While the API server is away: the sink must keep what it has.
  api.delete("Pod", "default", "gone");
  api.patchLabels("Pod", "default", "changed", { v: "2" });
  api.apply(pod({ name: "new" }));
  api.compact();
  await until(() => (s.status()[0]?.restarts.error ?? 0) >= 2, "failed reconnects while down");
  t.deepEqual(sink.keys("pods"), ["default/changed", "default/gone", "default/keep"], "nothing removed by an outage");
  await api.start();
  await until(() => s.status()[0]?.relists === 1, "the relist after 410");
  await api.waitForWatches(1, "pods");
  t.is(api.requestCount("list", "pods"), 2, "exactly one relist");
  t.true((s.status()[0]?.restarts.expired ?? 0) >= 1);
  const replaces = sink.calls.filter((c) => c.op === "replace");
  t.is(replaces.length, 2);
  t.deepEqual([...(replaces[1]?.names ?? [])].sort(), serverKeys(api, "Pod"), "the full set, unchanged ones included");
  t.deepEqual(sink.keys("pods"), ["default/changed", "default/keep", "default/new"]);
  t.deepEqual(sink.get("pods", "default/changed").metadata.labels, { v: "2" });
  t.false(
    sink.calls.some((c) => c.op === "remove"),
    "the deletion during the outage shows as its absence from the relist",
  );
  api.apply(pod({ name: "after" }));
  await until(() => sink.keys("pods").includes("default/after"), "watching again after the relist");
});

test("restart({keepState}): reconnect with backoff, resume from the resourceVersion, health reports then recovers", async (t) => {
  const api = await apiServer(t);
  api.apply(pod({ name: "a" }));
  const { source: s, sink } = await source(t, api, { unhealthyAfterMs: 150 });
  await s.start();
  await until(() => s.status()[0]?.watching === true, "watching");
  t.deepEqual(s.health(), { ok: true, reasons: [] });
  await api.stop();
  api.apply(pod({ name: "during" }));
  await until(() => !s.health().ok, "health reports the outage");
  const { reasons } = s.health();
  t.is(reasons.length, 1);
  t.regex(reasons[0] ?? "", /^pods: watch not established for \d+ s: .*ECONNREFUSED/);
  await api.restart({ keepState: true });
  await until(
    () => s.health().ok,
    "health recovers",
    10_000,
    () => s.health(),
  );
  await until(() => sink.keys("pods").length === 2, "the change made during the outage arrives");
  t.is(api.requestCount("list", "pods"), 1, "history kept: resumed, not relisted");
  t.is(s.status()[0]?.relists, 0);
});

test("429 with Retry-After: the retry waits what the server asked for, not the (much shorter) backoff", async (t) => {
  const api = await apiServer(t);
  api.apply(pod({ name: "a" }));
  api.failRequests({ count: 1, code: 429, verb: "list", resource: "Pod", retryAfterSeconds: 1 });
  const listedAt: number[] = [];
  const { source: s } = await source(t, api, {
    timing: { backoff: { baseMs: 10, capMs: 20 } },
    observer: { listed: () => listedAt.push(Date.now()) },
  });
  const started = Date.now();
  await s.start();
  t.true((listedAt[0] ?? 0) - started >= 1000, `listed ${(listedAt[0] ?? 0) - started} ms after start`);
  t.is(api.requestCount("list", "pods"), 2);
  t.like(s.status()[0], { restarts: { http_4xx: 1 }, lastError: { reason: "http_4xx" } });
  t.regex(s.status()[0]?.lastError?.message ?? "", /429 TooManyRequests/);
});

test("403 on the watch is logged as an RBAC problem and retried; the sink keeps its state meanwhile", async (t) => {
  const api = await apiServer(t);
  api.apply(pod({ name: "a" }));
  const { logger, lines } = capturingLogger("info");
  const { source: s, sink } = await source(t, api, { logger });
  await s.start();
  await api.waitForWatches(1, "pods");
  api.failRequests({ count: 3, code: 403, verb: "watch", resource: "Pod" });
  api.dropWatches();
  await until(() => api.requestCount("watch", "pods") >= 5 && api.openWatches("pods") === 1, "through the 403s");
  const rbac = lines.filter((l) => /403 Forbidden: RBAC/.test(String(l.msg)));
  t.true(rbac.length >= 1, "an error line that names RBAC");
  t.like(rbac[0], { level: 50, resource: "pods", httpStatus: 403 });
  t.deepEqual(sink.keys("pods"), ["default/a"]);
  t.is(s.status()[0]?.restarts.http_4xx, 3);
  // The server counts the watch as open before the client has read its headers: wait for the client's side.
  await until(() => lines.some((l) => l.msg === "watch re-established"), "recovery is logged");
  t.like(
    lines.find((l) => l.msg === "watch re-established"),
    { failures: 4 },
    "the drop and the three 403s",
  );
});

test("a 5xx on the list is retried with backoff; start() waits for it", async (t) => {
  const api = await apiServer(t);
  api.apply(pod({ name: "a" }));
  api.failRequests({ count: 3, code: 503, verb: "list", resource: "Pod" });
  const { source: s, sink } = await source(t, api);
  await s.start();
  t.is(api.requestCount("list", "pods"), 4);
  t.deepEqual(sink.keys("pods"), ["default/a"]);
  t.is(s.status()[0]?.restarts.http_5xx, 3);
});

const PEER_AUTHN = {
  resource: "peerAuthentications",
  paths: ["/apis/security.istio.io/v1/peerauthentications", "/apis/security.istio.io/v1beta1/peerauthentications"],
  optional: true,
};

test("v1 not served (404): the next path, v1beta1, is listed and watched", async (t) => {
  const api = await apiServer(t, { servedVersions: { "security.istio.io": ["v1beta1"] } });
  api.apply(peerAuthentication({ name: "strict", namespace: "shop", mode: "STRICT" }));
  const { source: s, sink } = await source(t, api, { resources: [PEER_AUTHN] });
  await s.start();
  t.like(s.status()[0], { path: PEER_AUTHN.paths[1], absent: false, listed: true });
  t.deepEqual(sink.keys("peerAuthentications"), ["shop/strict"]);
  t.is(sink.get("peerAuthentications", "shop/strict").apiVersion, "security.istio.io/v1beta1");
  await api.waitForWatches(1, "peerauthentications");
  api.apply(peerAuthentication({ name: "permissive", namespace: "shop", mode: "PERMISSIVE" }));
  await until(() => sink.keys("peerAuthentications").length === 2, "watched at v1beta1");
});

test("an optional resource served nowhere is empty, logged once, re-checked; the rest is followed normally", async (t) => {
  const api = await apiServer(t, { servedVersions: { "security.istio.io": [] } });
  api.apply(pod({ name: "a" }));
  const { logger, lines } = capturingLogger("debug");
  const { source: s, sink } = await source(t, api, { resources: [PODS, PEER_AUTHN], logger });
  await s.start();
  t.deepEqual(sink.log("peerAuthentications"), ["replace "], "one replace([])");
  t.like(s.status()[1], { listed: true, absent: true, watching: false, path: undefined });
  // The server does not count requests to paths it does not serve; the source's debug lines do.
  await until(() => lines.filter((l) => l.msg === "still not served").length >= 3, "re-checks");
  t.deepEqual(sink.log("peerAuthentications"), ["replace "], "re-checks deliver nothing new");
  t.is(lines.filter((l) => /not served by the API server/.test(String(l.msg))).length, 1, "logged once");
  t.deepEqual(s.health(), { ok: true, reasons: [] }, "absent is not unhealthy");
  t.deepEqual(sink.keys("pods"), ["default/a"]);
});

test("a required resource served nowhere is an error: retried, and start() says what is missing", async (t) => {
  const api = await apiServer(t, { servedVersions: { "security.istio.io": [] } });
  const { source: s } = await source(t, api, {
    resources: [{ ...PEER_AUTHN, optional: false }],
    startTimeoutMs: 500,
  });
  const err = await t.throwsAsync(s.start());
  t.like(err, { code: "not_synced" });
  t.regex(err?.message ?? "", /peerAuthentications: not listed yet after \d+ s: not served at .* \(404\)/);
  const failures = s.status()[0]?.restarts.http_4xx ?? 0;
  await until(() => (s.status()[0]?.restarts.http_4xx ?? 0) > failures, "still trying after start() gave up");
  t.pass();
});
