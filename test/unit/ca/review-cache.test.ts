import { setTimeout as sleep } from "node:timers/promises";
import test from "ava";
import { KubeTokenReviewer } from "../../../agent/ca/kube-token-reviewer.js";
import { CachingTokenReviewer, type ReviewCacheOptions } from "../../../agent/ca/review-cache.js";
import type { IdentityError } from "../../../agent/identity/errors.js";
import { AGENT, fakeApiServer } from "./fake-api-server.js";

/** The Kubernetes reviewer against the stand-in API server, wrapped; `admits` counts reviews that were charged. */
async function setup(t: import("ava").ExecutionContext, options: ReviewCacheOptions = {}) {
  const api = await fakeApiServer(t);
  const kube = new KubeTokenReviewer({
    api: api.api,
    allowedUsers: [AGENT],
  });
  const cache = new CachingTokenReviewer(kube, options);
  const counter = { admits: 0 };
  const review = (token: string) =>
    cache.review(token, () => {
      counter.admits += 1;
    });
  return { api, review, counter };
}

test("one review per token: concurrent requests share it, later ones hit the cache, admit counts only reviews", async (t) => {
  const { api, review, counter } = await setup(t);
  const valid = await Promise.all(Array.from({ length: 50 }, () => review("agent-token")));
  t.true(valid.every((c) => c?.nodeName === "node-a"));
  t.like(await review("agent-token"), { nodeName: "node-a", user: AGENT });
  const invalid = await Promise.all(Array.from({ length: 200 }, () => review("not-a-token")));
  t.true(invalid.every((c) => c === undefined));
  t.is(await review("not-a-token"), undefined);
  t.deepEqual(
    api.seen.map((s) => (s.body.spec as { token: string }).token),
    ["agent-token", "not-a-token"],
  );
  t.is(counter.admits, 2);
});

test("answers expire after their TTL, valid and invalid alike", async (t) => {
  const { api, review } = await setup(t, { validTtlMs: 1000, invalidTtlMs: 1000 });
  await review("agent-token");
  await review("not-a-token");
  await review("agent-token");
  await review("not-a-token");
  t.is(api.seen.length, 2);
  await sleep(1100);
  await review("agent-token");
  await review("not-a-token");
  t.is(api.seen.length, 4);
});

test("entries are bounded per kind; invalid tokens never push out valid ones", async (t) => {
  const { api, review } = await setup(t, { maxEntries: 2 });
  await review("agent-token");
  for (let i = 0; i < 20; i++) await review(`bad-${i}`);
  await review("agent-token");
  t.is(api.seen.length, 21, "the valid answer survived 20 invalid ones");
  await review("agent-b");
  await review("agent-c");
  await review("agent-token");
  t.is(api.seen.length, 24, "the oldest valid answer made room");
  await review("bad-19");
  t.is(api.seen.length, 24, "the newest invalid answer is still there");
  await review("bad-0");
  t.is(api.seen.length, 25, "an old invalid answer was dropped");
});

test("at most maxConcurrent reviews run; a full queue or a long wait is refused as token_review_busy", async (t) => {
  const { api, review } = await setup(t, { maxConcurrent: 3, maxQueued: 4 });
  api.state.delayMs = 100;
  const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => review(`bad-${i}`)));
  t.true(api.state.maxInFlight <= 3, `${api.state.maxInFlight} reviews at once`);
  t.is(results.filter((r) => r.status === "fulfilled").length, 7, "3 running + 4 queued");
  const busy = results.filter((r) => r.status === "rejected").map((r) => (r.reason as IdentityError).code);
  t.deepEqual(busy, ["token_review_busy", "token_review_busy", "token_review_busy"]);
  t.is(api.seen.length, 7);

  const slow = await setup(t, { maxConcurrent: 1, maxWaitMs: 50 });
  slow.api.state.delayMs = 300;
  const [first, second] = await Promise.allSettled([slow.review("bad-a"), slow.review("bad-b")]);
  t.is(first.status, "fulfilled");
  t.like(second, { status: "rejected", reason: { code: "token_review_busy" } });
});

test("a failing review is not cached: the next request asks again", async (t) => {
  const { api, review } = await setup(t);
  api.state.down = true;
  const failed = await Promise.allSettled([review("agent-token"), review("agent-token")]);
  t.true(failed.every((r) => r.status === "rejected" && (r.reason as IdentityError).code === "token_review_failed"));
  t.is(api.seen.length, 1, "the two requests shared one review");
  api.state.down = false;
  t.like(await review("agent-token"), { nodeName: "node-a" });
  t.is(api.seen.length, 2);
});
