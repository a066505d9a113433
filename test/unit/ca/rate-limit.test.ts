import test from "ava";
import { KeyedRateLimiter, RateLimitedError } from "../../../agent/ca/rate-limit.js";

function refusal(limiter: KeyedRateLimiter, address: string, now: number): RateLimitedError | undefined {
  try {
    limiter.take(address, now);
    return undefined;
  } catch (err) {
    if (err instanceof RateLimitedError) return err;
    throw err;
  }
}

test("an address spends its burst, then waits for the rate; Retry-After says how long", (t) => {
  const limiter = new KeyedRateLimiter("source_address", { burst: 3, ratePerSec: 0.5 });
  for (let i = 0; i < 3; i++) t.is(refusal(limiter, "10.0.0.1", 0), undefined);
  const first = refusal(limiter, "10.0.0.1", 0);
  t.like(first, { code: "rate_limited", scope: "source_address", key: "10.0.0.1", retryAfterSec: 2, first: true });
  t.like(refusal(limiter, "10.0.0.1", 1000), { retryAfterSec: 1, first: false }, "half a token earned meanwhile");
  t.is(refusal(limiter, "10.0.0.1", 2000), undefined, "one token after 2 s");
  t.like(refusal(limiter, "10.0.0.1", 2000), { first: true }, "a new episode is reported again");
  t.is(refusal(limiter, "10.0.0.2", 2000), undefined, "other addresses are not affected");
});

test("keys whose bucket is full again are forgotten; the map never exceeds maxKeys", (t) => {
  const limiter = new KeyedRateLimiter("node", { burst: 2, ratePerSec: 1, maxKeys: 3 });
  limiter.take("a", 0);
  limiter.take("b", 0);
  t.is(limiter.size, 2);
  limiter.take("c", 1000);
  t.is(limiter.size, 1, "a and b were idle for burst/rate = 1 s: forgotten, c tracked");
  for (let i = 0; i < 100; i++) {
    limiter.take(`x${i}`, 1500);
    t.true(limiter.size <= 3);
  }
  t.is(refusal(limiter, "x99", 1500), undefined, "the most recent address kept its bucket (1 of 2 left)");
  t.truthy(refusal(limiter, "x99", 1500));
});

test("a limiter that would admit nothing is refused at construction", (t) => {
  t.throws(() => new KeyedRateLimiter("node", { ratePerSec: 0 }), { instanceOf: RangeError });
  t.throws(() => new KeyedRateLimiter("source_address", { burst: 0 }), { instanceOf: RangeError });
});
