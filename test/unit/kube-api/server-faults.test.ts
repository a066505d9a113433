import { spawn } from "node:child_process";
import { once } from "node:events";
import { connect } from "node:net";
import { fileURLToPath } from "node:url";
import test from "ava";
import { pod } from "../../kube-api/objects.js";
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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("dropWatches: connections die without a final chunk; a re-watch from the last RV misses nothing", async (t) => {
  const s = await server(t);
  const pods = watch(t, s, `/api/v1/pods?watch=1&resourceVersion=${s.resourceVersion}`);
  const namespaces = watch(t, s, `/api/v1/namespaces?watch=1&resourceVersion=${s.resourceVersion}`);
  await s.waitForWatches(2);
  s.apply(pod({ name: "a" }));
  await pods.waitFor(1);
  const last = pods.events[0]?.object.metadata.resourceVersion;
  s.dropWatches("Pod");
  t.deepEqual(await pods.end(), { complete: false }, "abrupt: the client never saw the end of the chunked body");
  t.is(s.openWatches("pods"), 0);
  t.is(s.openWatches("namespaces"), 1, "only the named resource's watches were dropped");
  s.apply(pod({ name: "b" })); // while the client is away
  const again = watch(t, s, `/api/v1/pods?watch=1&resourceVersion=${last}`);
  await again.waitFor(1);
  t.deepEqual(changes(again.events), ["ADDED b"]);
  s.dropWatches();
  t.deepEqual(await namespaces.end(), { complete: false });
  t.is((await call(s, "/api/v1/pods")).status, 200, "the server itself is fine");
});

test("stallWatches: nothing at all is sent (no events, bookmarks, headers) until resume; then all of it in order", async (t) => {
  const s = await server(t, { bookmarkIntervalMs: 50 });
  const w = watch(t, s, `/api/v1/pods?watch=1&allowWatchBookmarks=true&resourceVersion=${s.resourceVersion}`);
  await w.waitUntil((es) => es.some((e) => e.type === "BOOKMARK"), "a bookmark before the stall");
  s.stallWatches();
  const before = w.events.length;
  s.apply(pod({ name: "a" }));
  s.apply(pod({ name: "b" }));
  s.delete("Pod", "default", "a");
  let headers = false;
  const late = watch(t, s, "/api/v1/pods?watch=1");
  void late.response.then(() => {
    headers = true;
  });
  await s.waitForWatches(2);
  await sleep(400);
  t.is(w.events.length, before, "not even a bookmark while stalled (8 would have been due)");
  t.false(headers, "a watch opened during the stall gets no response headers either");
  t.is(s.openWatches(), 2, "the connections stay open");
  s.resumeWatches();
  await w.waitUntil((es) => changes(es).length >= 3, "the queued events");
  t.deepEqual(changes(w.events), ["ADDED a", "ADDED b", "DELETED a"]);
  await late.waitFor(1);
  t.deepEqual(changes(late.events), ["ADDED b"], "the late watch's initial state, as of when it was opened");
  const count = w.events.length;
  await w.waitUntil((es) => es.length > count && es.at(-1)?.type === "BOOKMARK", "bookmarks again");
  t.pass();
});

test("restart keepState: every connection closes, the same port serves the same objects, RVs and history", async (t) => {
  const s = await server(t);
  const port = s.port;
  s.applyAll([pod({ name: "a" }), pod({ name: "b" })]);
  const before = await call(s, "/api/v1/pods");
  const w = watch(t, s, `/api/v1/pods?watch=1&resourceVersion=${before.body.metadata.resourceVersion}`);
  await s.waitForWatches(1);
  await s.restart({ keepState: true });
  t.deepEqual(await w.end(), { complete: false });
  t.is(s.port, port);
  const after = await call(s, "/api/v1/pods");
  t.deepEqual(after.body, before.body, "same objects, same resourceVersions");
  s.apply(pod({ name: "c" }));
  const resumed = watch(t, s, `/api/v1/pods?watch=1&resourceVersion=${before.body.metadata.resourceVersion}`);
  await resumed.waitFor(1);
  t.deepEqual(changes(resumed.events), ["ADDED c"], "history survived: the watch resumes from its RV");
});

test("restart with compaction or without state: watches from old RVs get 410", async (t) => {
  const s = await server(t);
  s.apply(pod({ name: "a" }));
  const old = s.resourceVersion;
  s.apply(pod({ name: "b" }));
  await s.restart({ compact: true });
  const w1 = watch(t, s, `/api/v1/pods?watch=1&resourceVersion=${old}`);
  await w1.end();
  t.like(w1.events[0], { type: "ERROR", object: { code: 410, reason: "Expired" } });
  t.is((await call(s, "/api/v1/pods")).body.items.length, 2, "compaction keeps the objects");

  const last = s.resourceVersion;
  await s.restart({ keepState: false });
  const list = await call(s, "/api/v1/pods");
  t.deepEqual(list.body.items, [], "a new, empty cluster");
  t.true(Number(list.body.metadata.resourceVersion) > Number(last), "RVs never go back");
  const w2 = watch(t, s, `/api/v1/pods?watch=1&resourceVersion=${last}`);
  await w2.end();
  t.like(w2.events[0], { type: "ERROR", object: { code: 410 } }, "even the last RV of the old epoch is expired");
});

test("stop/start: unreachable (connection refused) while stopped, then back on the same port", async (t) => {
  const s = await server(t);
  const port = s.port;
  await s.stop();
  const err = await t.throwsAsync(call(s, "/api/v1/pods"));
  t.is((err as NodeJS.ErrnoException).code, "ECONNREFUSED");
  await s.start();
  t.is(s.port, port);
  t.is((await call(s, "/api/v1/pods")).status, 200);
});

test("stop() ends a connection still in its TLS handshake at once (closeAllConnections does not see it)", async (t) => {
  // A client reconnecting as the server stops: connected, no ClientHello yet. Node's TLS handshake timeout is 120 s.
  t.timeout(10_000);
  const s = await server(t);
  const half = connect(s.port, "127.0.0.1");
  await once(half, "connect");
  const ended = once(half, "close");
  await s.stop();
  await ended;
  t.true(half.destroyed);
});

test("failRequests: the next N matching requests fail with the real server's Status (429 with Retry-After)", async (t) => {
  const s = await server(t);
  s.failRequests({ count: 2, code: 429, verb: "list", resource: "Pod", retryAfterSeconds: 1 });
  const a = await call(s, "/api/v1/pods");
  t.like(a, {
    status: 429,
    body: { kind: "Status", reason: "TooManyRequests", code: 429, details: { retryAfterSeconds: 1 } },
  });
  t.is(a.headers["retry-after"], "1");
  t.is((await call(s, "/api/v1/namespaces")).status, 200, "other resources are not affected");
  t.is((await call(s, "/api/v1/pods?watch=1&timeoutSeconds=1")).status, 200, "nor other verbs");
  t.is((await call(s, "/api/v1/pods")).status, 429);
  t.is((await call(s, "/api/v1/pods")).status, 200, "only N requests fail");
  s.failRequests({ count: 1, code: 500 });
  t.like(await call(s, "/api/v1/namespaces/x/pods/y"), { status: 500, body: { reason: "InternalError" } });
  t.is(s.requestCount("list", "pods"), 3, "failed requests are counted");
  t.is(s.requestCount("list"), 4);
  t.is(s.requestCount("watch", "Pod"), 1);
  t.is(s.requestCount("get", "pods"), 1);
});

test("close() leaves nothing that keeps the process alive, even with a watch and bookmarks running", async (t) => {
  const serverModule = fileURLToPath(new URL("../../kube-api/server.js", import.meta.url));
  const clientModule = fileURLToPath(new URL("./client.js", import.meta.url));
  const script = `
    const { KubeApiServer } = await import(${JSON.stringify(serverModule)});
    const { Watch } = await import(${JSON.stringify(clientModule)});
    const s = await KubeApiServer.start({ bookmarkIntervalMs: 20 });
    const w = new Watch(s, "/api/v1/pods?watch=1&allowWatchBookmarks=true&timeoutSeconds=600");
    await w.waitFor(1);
    await s.close();
    await w.end();
    console.log("closed");
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d) => {
    out += d;
  });
  child.stderr.on("data", (d) => {
    out += d;
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  const [code, signal] = await once(child, "exit");
  clearTimeout(timer);
  t.is(signal, null, `the process had to be killed: ${out}`);
  t.is(code, 0, out);
  t.regex(out, /closed/);
});
