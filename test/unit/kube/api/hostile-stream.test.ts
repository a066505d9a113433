import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test, { type ExecutionContext } from "ava";
import { KubeApiConfig } from "../../../../agent/kube/api/config.js";
import { KubeApiSource } from "../../../../agent/kube/api/kube-api-source.js";
import { kubeconfigYaml, servingCredentials } from "../../../kube-api/credentials.js";
import { capturingLogger } from "../../../support/log-lines.js";
import { FAST, PODS, recordingSink, until } from "./support.js";

/**
 * What the test API server never sends: garbage in the watch stream, over-long lines, events without an object, a
 * non-410 ERROR event, a list without a resourceVersion. A scripted HTTPS stand-in for the API server answers
 * each request from a queue the test fills, and records the requests.
 */

type Answer = (req: IncomingMessage, res: ServerResponse) => void;

const podJson = (name: string, rv: number) =>
  JSON.stringify({
    kind: "Pod",
    apiVersion: "v1",
    metadata: { name, namespace: "default", resourceVersion: String(rv) },
  });

const list =
  (rv: number, ...names: string[]): Answer =>
  (_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(
      `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"${rv}"},"items":[${names.map((n) => podJson(n, rv)).join(",")}]}`,
    );
  };

/** A watch answering `lines` (each followed by a newline), then staying open. */
const stream =
  (...lines: string[]): Answer =>
  (_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    for (const l of lines) res.write(`${l}\n`);
  };

const event = (type: string, name: string, rv: number) => `{"type":"${type}","object":${podJson(name, rv)}}`;

async function standIn(t: ExecutionContext) {
  const creds = await servingCredentials();
  const lists: Answer[] = [];
  const watches: Answer[] = [];
  const requests: URL[] = [];
  const open = new Set<ServerResponse>();
  const sockets = new Set<Socket>();
  const server = createServer({ key: creds.keyPem, cert: creds.certPem }, (req, res) => {
    const url = new URL(req.url ?? "/", "https://127.0.0.1");
    requests.push(url);
    open.add(res);
    res.on("close", () => open.delete(res));
    const queue = url.searchParams.get("watch") === "true" ? watches : lists;
    const answer = queue.shift();
    if (answer) answer(req, res);
    // Nothing scripted: hold the request (the client's timeouts handle it).
  });
  server.on("secureConnection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as AddressInfo).port;
  const dir = await mkdtemp(join(tmpdir(), "ambit-standin-"));
  const kubeconfig = join(dir, "config");
  await writeFile(
    kubeconfig,
    kubeconfigYaml({ server: `https://127.0.0.1:${port}`, caPem: creds.caPem, user: { token: "t" } }),
  );
  t.teardown(async () => {
    for (const res of open) res.destroy();
    server.closeAllConnections();
    server.close();
    await rm(dir, { recursive: true, force: true });
  });
  return {
    lists,
    watches,
    requests,
    /** Client connections still open. */
    connections: () => sockets.size,
    watchRequests: () => requests.filter((u) => u.searchParams.get("watch") === "true"),
    listRequests: () => requests.filter((u) => u.searchParams.get("watch") !== "true"),
    config: () => KubeApiConfig.fromKubeconfig(kubeconfig),
  };
}

async function run(t: ExecutionContext, s: Awaited<ReturnType<typeof standIn>>, timing = {}) {
  const sink = recordingSink();
  const { logger, lines } = capturingLogger("debug");
  const source = new KubeApiSource({
    config: await s.config(),
    resources: [PODS],
    sink,
    logger,
    timing: { ...FAST, ...timing },
  });
  t.teardown(() => source.close());
  await source.start();
  return { source, sink, lines };
}

test("garbage in the watch stream breaks the watch: re-watch from the last good resourceVersion, no relist", async (t) => {
  const s = await standIn(t);
  s.lists.push(list(10, "a"));
  s.watches.push(stream(event("ADDED", "b", 11), "<html>502 Bad Gateway</html>", event("ADDED", "never", 12)));
  s.watches.push(stream(event("ADDED", "c", 13)));
  const { source, sink } = await run(t, s);
  await until(
    () => sink.keys("pods").length === 3,
    "c on the second watch",
    5000,
    () => sink.log("pods"),
  );
  t.deepEqual(sink.log("pods"), ["replace default/a", "upsert default/b", "upsert default/c"], "nothing after garbage");
  t.deepEqual(
    s.watchRequests().map((u) => u.searchParams.get("resourceVersion")),
    ["10", "11"],
    "the second watch starts where the last good event left off",
  );
  const first = s.watchRequests()[0];
  t.is(first?.searchParams.get("allowWatchBookmarks"), "true");
  const timeout = Number(first?.searchParams.get("timeoutSeconds"));
  t.true(timeout >= 60 && timeout <= 120, `timeoutSeconds ${timeout} from the configured range`);
  t.is(s.listRequests().length, 1);
  t.is(s.listRequests()[0]?.searchParams.get("limit"), "500");
  t.like(source.status()[0], { restarts: { error: 1 }, lastError: { reason: "error" } });
  t.regex(source.status()[0]?.lastError?.message ?? "", /line is not JSON/);
});

test("a line longer than maxLineBytes breaks the watch without buffering it all", async (t) => {
  const s = await standIn(t);
  s.lists.push(list(10));
  s.watches.push(stream(`{"type":"ADDED","object":{"metadata":{"name":"${"x".repeat(4096)}"}}}`));
  s.watches.push(stream(event("ADDED", "ok", 11)));
  const { source, sink } = await run(t, s, { maxLineBytes: 1024 });
  await until(() => sink.keys("pods").length === 1, "the next watch");
  t.regex(source.status()[0]?.lastError?.message ?? "", /line longer than 1024 bytes/);
  t.deepEqual(sink.keys("pods"), ["default/ok"]);
});

test("events without object or metadata, or of unknown type, are skipped with a log line; the watch goes on", async (t) => {
  const s = await standIn(t);
  s.lists.push(list(10));
  s.watches.push(
    stream(
      '{"type":"ADDED"}',
      '{"type":"MODIFIED","object":{"spec":{}}}',
      '{"type":"SURPRISE","object":{"metadata":{}}}',
      '{"type":"ADDED","object":{"metadata":{"name":"odd","namespace":"default","resourceVersion":"12"},"spec":7}}',
    ),
  );
  const { source, sink, lines } = await run(t, s);
  await until(() => sink.keys("pods").length === 1, "the odd-shaped object");
  t.is(sink.get("pods", "default/odd").spec, 7, "an unexpected shape is passed on: the store validates");
  const skipped = lines.filter((l) => /event skipped/.test(String(l.msg))).map((l) => l.msg);
  t.deepEqual(skipped, [
    "watch: ADDED event without an object; event skipped",
    "watch: MODIFIED event whose object has no metadata; event skipped",
    'watch: unknown event type "SURPRISE"; event skipped',
  ]);
  t.is(source.status()[0]?.resourceVersion, "12");
  t.is(s.watchRequests().length, 1, "the watch was not restarted");
});

test("an ERROR event other than 410 re-watches (with backoff) from the same resourceVersion; 410 relists", async (t) => {
  const s = await standIn(t);
  s.lists.push(list(10, "a"));
  const status = (code: number, reason: string) =>
    `{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"m","reason":"${reason}","code":${code}}}`;
  s.watches.push(stream(event("MODIFIED", "a", 11), status(500, "InternalError")));
  s.watches.push(stream(status(410, "Expired")));
  s.lists.push(list(20, "z"));
  s.watches.push(stream(event("ADDED", "y", 21)));
  const { source, sink } = await run(t, s);
  await until(
    () => sink.keys("pods").join() === "default/y,default/z",
    "relisted and watching",
    5000,
    () => sink.log("pods"),
  );
  t.deepEqual(
    s.watchRequests().map((u) => u.searchParams.get("resourceVersion")),
    ["10", "11", "20"],
  );
  t.like(source.status()[0], { relists: 1, restarts: { http_5xx: 1, expired: 1 } });
  t.deepEqual(sink.log("pods"), ["replace default/a", "upsert default/a", "replace default/z", "upsert default/y"]);
});

test("a list without a resourceVersion is a bad answer: retried, never handed to the sink", async (t) => {
  const s = await standIn(t);
  s.lists.push((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[]}');
  });
  s.lists.push((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end("not json");
  });
  s.lists.push(list(5, "a"));
  const { source, sink } = await run(t, s);
  t.deepEqual(sink.log("pods"), ["replace default/a"]);
  t.is(source.status()[0]?.restarts.error, 2);
  t.regex(source.status()[0]?.lastError?.message ?? "", /not JSON/);
});

test("an API server that accepts the connection and never answers: each request times out and is retried", async (t) => {
  const s = await standIn(t);
  const sink = recordingSink();
  const source = new KubeApiSource({
    config: await s.config(),
    resources: [PODS],
    sink,
    timing: { ...FAST, listTimeoutMs: 200 },
    startTimeoutMs: 1000,
  });
  t.teardown(() => source.close());
  const err = await t.throwsAsync(source.start());
  t.regex(err?.message ?? "", /no answer from 127.0.0.1:\d+ within 200 ms/);
  t.true(s.listRequests().length >= 2, `${s.listRequests().length} attempts`);
  t.deepEqual(sink.calls, []);
});

const statusAnswer =
  (code: number, reason: string): Answer =>
  (_req, res) => {
    res.writeHead(code, { "content-type": "application/json" });
    res.end(
      `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"gone","reason":"${reason}","code":${code}}`,
    );
  };

test("410 as the HTTP status of a watch request relists", async (t) => {
  const s = await standIn(t);
  s.lists.push(list(10, "a"));
  s.watches.push(statusAnswer(410, "Gone"));
  s.lists.push(list(20, "b"));
  s.watches.push(stream());
  const { source, sink } = await run(t, s);
  await until(() => source.status()[0]?.relists === 1 && s.watchRequests().length === 2, "relisted, watching");
  t.deepEqual(sink.log("pods"), ["replace default/a", "replace default/b"]);
  t.deepEqual(
    s.watchRequests().map((u) => u.searchParams.get("resourceVersion")),
    ["10", "20"],
  );
});

test("410 on a continue page starts the list over (never a partial replace)", async (t) => {
  const s = await standIn(t);
  s.lists.push((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(
      `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"10","continue":"tok1"},"items":[${podJson("a", 10)}]}`,
    );
  });
  s.lists.push(statusAnswer(410, "Expired"));
  s.lists.push(list(30, "a", "b"));
  s.watches.push(stream());
  const { source, sink } = await run(t, s);
  t.deepEqual(sink.log("pods"), ["replace default/a,default/b"]);
  t.deepEqual(
    s.listRequests().map((u) => u.searchParams.get("continue")),
    [null, "tok1", null],
  );
  t.like(source.status()[0], { relists: 0, restarts: { expired: 1 }, resourceVersion: "30" });
});

test("close() closes every connection it opened, idle keep-alive ones included", async (t) => {
  const s = await standIn(t);
  s.lists.push(list(10, "a"));
  s.watches.push(statusAnswer(500, "InternalError"));
  const source = new KubeApiSource({
    config: await s.config(),
    resources: [PODS],
    sink: recordingSink(),
    timing: { ...FAST, backoff: { baseMs: 10_000, capMs: 10_000 } },
    random: () => 0.99, // a ~10 s backoff after the 500, with the connection idle in the keep-alive pool
  });
  t.teardown(() => source.close());
  await source.start();
  await until(() => source.status()[0]?.restarts.http_5xx === 1, "the 500");
  t.is(s.connections(), 1, "list and watch went over one connection, now idle in the pool");
  await source.close();
  // The stand-in would close an idle connection itself only after its 5 s keep-alive timeout.
  await until(() => s.connections() === 0, "no connection left", 2000);
  t.pass();
});
