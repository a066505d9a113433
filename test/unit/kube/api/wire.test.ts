import test from "ava";
import { Backoff, backoffDelayMs, parseRetryAfter } from "../../../../agent/kube/api/backoff.js";
import { KubeApiError } from "../../../../agent/kube/api/errors.js";
import { LineSplitter, parseStatus, parseWatchLine } from "../../../../agent/kube/api/watch-event.js";
import { restartReasonOf } from "../../../../agent/kube/api/watch-status.js";

/** The pure parts: backoff arithmetic, Retry-After, the NDJSON splitter, event and Status parsing. */

test("backoff: full jitter under a doubling bound, capped; reset starts over", (t) => {
  const policy = { baseMs: 250, capMs: 30_000 };
  const max = () => 0.999999;
  t.deepEqual(
    [0, 1, 2, 3, 4, 6, 7, 8, 50].map((a) => backoffDelayMs(a, policy, max)),
    [249, 499, 999, 1999, 3999, 15_999, 29_999, 29_999, 29_999],
  );
  t.is(
    backoffDelayMs(5, policy, () => 0),
    0,
    "full jitter: anywhere from 0",
  );
  const b = new Backoff(policy, () => 0.5);
  t.deepEqual([b.next(), b.next(), b.next()], [125, 250, 500]);
  b.reset();
  t.is(b.next(), 125);
});

test("Retry-After: seconds or an HTTP date, capped; anything else is ignored", (t) => {
  const now = Date.parse("2025-01-01T00:00:00Z");
  t.is(parseRetryAfter("3", 60_000, now), 3000);
  t.is(parseRetryAfter("3600", 60_000, now), 60_000, "capped");
  t.is(parseRetryAfter("Wed, 01 Jan 2025 00:00:10 GMT", 60_000, now), 10_000);
  t.is(parseRetryAfter("Tue, 31 Dec 2024 00:00:00 GMT", 60_000, now), 0, "a date in the past: no wait");
  for (const bad of [undefined, "", "-1", "1.5", "soon", ["1", "2"], "x".repeat(100)]) {
    t.is(parseRetryAfter(bad, 60_000, now), undefined, JSON.stringify(bad));
  }
});

test("LineSplitter: lines across chunks, UTF-8 split mid-character, empty lines dropped", (t) => {
  const s = new LineSplitter(1024);
  const text = Buffer.from('{"a":"é"}\n\n{"b":1}\n{"c"');
  const cut = text.indexOf(0xc3) + 1; // inside the two bytes of "é"
  t.deepEqual(s.push(text.subarray(0, cut)), []);
  t.deepEqual(s.push(text.subarray(cut)), ['{"a":"é"}', '{"b":1}']);
  t.deepEqual(s.push(Buffer.from(":2}\n")), ['{"c":2}']);
});

test("LineSplitter: a line over the limit throws, whether it arrives whole or in pieces", (t) => {
  t.throws(() => new LineSplitter(8).push(Buffer.from("123456789\n")), { message: /longer than 8 bytes/ });
  const s = new LineSplitter(8);
  s.push(Buffer.from("12345"));
  const err = t.throws(() => s.push(Buffer.from("6789")));
  t.true(err instanceof KubeApiError && err.code === "bad_response");
  t.deepEqual(new LineSplitter(8).push(Buffer.from("12345678\n")), ["12345678"], "exactly the limit is fine");
});

test("parseWatchLine: changes, bookmarks, errors, skips; garbage throws", (t) => {
  t.like(parseWatchLine('{"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"7"}}}'), {
    kind: "change",
    type: "ADDED",
    resourceVersion: "7",
  });
  t.like(parseWatchLine('{"type":"DELETED","object":{"metadata":{"name":"a"}}}'), {
    kind: "change",
    type: "DELETED",
    resourceVersion: undefined,
  });
  t.deepEqual(parseWatchLine('{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"9"}}}'), {
    kind: "bookmark",
    resourceVersion: "9",
  });
  t.deepEqual(
    parseWatchLine('{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old"}}'),
    {
      kind: "error",
      status: { code: 410, reason: "Expired", message: "too old", retryAfterSeconds: undefined },
    },
  );
  t.like(parseWatchLine('{"type":"ERROR"}'), { kind: "error", status: { code: undefined } });
  t.like(parseWatchLine('{"type":"ADDED","object":null}'), { kind: "skip" });
  t.like(parseWatchLine('{"type":"ADDED","object":{"metadata":[]}}'), { kind: "skip" });
  t.like(parseWatchLine('{"type":"X","object":{"metadata":{}}}'), { kind: "skip" });
  for (const garbage of ["not json", "[1]", "null", '"ADDED"', '{"object":{}}', '{"type":1}']) {
    t.throws(() => parseWatchLine(garbage), { instanceOf: KubeApiError }, garbage);
  }
});

test("parseStatus: only well-typed fields, messages clipped", (t) => {
  t.deepEqual(parseStatus({ code: "500", reason: 1, details: { retryAfterSeconds: -1 } }), {
    code: undefined,
    reason: "",
    message: "",
    retryAfterSeconds: undefined,
  });
  t.is(parseStatus({ message: "m".repeat(10_000) }).message.length, 512);
  t.is(parseStatus({ details: { retryAfterSeconds: 3 } }).retryAfterSeconds, 3);
});

test("restart reasons: 410 expired, classes of HTTP status, everything else error", (t) => {
  const http = (httpStatus: number) => new KubeApiError("http_status", "", { httpStatus });
  t.is(restartReasonOf(http(410)), "expired");
  t.is(restartReasonOf(http(429)), "http_4xx");
  t.is(restartReasonOf(http(401)), "http_4xx");
  t.is(restartReasonOf(http(503)), "http_5xx");
  t.is(restartReasonOf(http(302)), "http_3xx");
  t.is(restartReasonOf(http(200)), "error");
  t.is(restartReasonOf(new KubeApiError("unreachable", "ECONNRESET")), "error");
  t.is(restartReasonOf(new Error("x")), "error");
});
