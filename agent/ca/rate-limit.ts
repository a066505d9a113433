import { IdentityError } from "../identity/errors.js";

export interface RateLimitOptions {
  /** Tokens each key earns per second. */
  ratePerSec?: number;
  /** What a key may spend at once (and what a key not seen for a while starts with). */
  burst?: number;
  /** Keys tracked; the least recently seen is forgotten first (it then starts again with a full burst). */
  maxKeys?: number;
}

/**
 * What the CA's limits are keyed by: the caller's source address for token reviews (the caller is not known yet),
 * the authenticated node for certificate requests.
 */
export type RateScope = "source_address" | "node";

/**
 * Defaults for the CA's token reviews: 20 at once, then 2 per second, per source address. Only reviews that reach
 * the API server are charged (see ca-server.ts), and an agent needs one per token per cache lifetime, so a node's
 * agent never comes near this; an address sending unknown tokens is held to 2 reviews a second.
 */
export const DEFAULT_ADDRESS_RATE_LIMIT: Required<RateLimitOptions> = {
  ratePerSec: 2,
  burst: 20,
  maxKeys: 10_000,
};

/**
 * Defaults for certificate requests, per authenticated node: 250 at once, then 5 per second. A node asks once per
 * identity (service account) on it, all at once when its agent starts: Kubernetes runs at most 110 pods on a node
 * by default, so a restart fits in the burst with room for its retries; afterwards it asks at each renewal (half a
 * certificate's life, 12 h by default) and when a pod with a new service account arrives. The rate is for a node
 * whose pods churn. What it stops is one node (a compromised agent's token) keeping the CA from signing for
 * everyone else: checking a CSR and signing its certificate takes the CA's one thread 2.2 to 3.1 ms (dev VM, 500
 * in a row), so a node asking without pause would have it all; held to 5 per second it has about 1.5%.
 */
export const DEFAULT_NODE_RATE_LIMIT: Required<RateLimitOptions> = {
  ratePerSec: 5,
  burst: 250,
  maxKeys: 10_000,
};

const WHAT: Record<RateScope, string> = {
  source_address: "token reviews from",
  node: "certificate requests from node",
};

/** Refused by a limiter: answered 429 with Retry-After, `scope` as the reason. */
export class RateLimitedError extends IdentityError {
  constructor(
    readonly scope: RateScope,
    readonly key: string,
    readonly retryAfterSec: number,
    /** The first refusal since this key was last admitted (worth a warning; the rest are not). */
    readonly first: boolean,
  ) {
    super("rate_limited", `too many ${WHAT[scope]} ${key}; retry in ${retryAfterSec} s`);
  }
}

interface Bucket {
  tokens: number;
  at: number;
  refused: number;
}

/** A token bucket per key, in a bounded map that forgets keys once their bucket is full again. */
export class KeyedRateLimiter {
  readonly scope: RateScope;
  readonly #opts: Required<RateLimitOptions>;
  // Re-inserted on every use, so iteration starts at the key seen least recently.
  readonly #buckets = new Map<string, Bucket>();

  constructor(scope: RateScope, options: RateLimitOptions = {}) {
    this.scope = scope;
    const defaults = scope === "node" ? DEFAULT_NODE_RATE_LIMIT : DEFAULT_ADDRESS_RATE_LIMIT;
    this.#opts = { ...defaults, ...options };
    const { ratePerSec, burst, maxKeys } = this.#opts;
    if (!(ratePerSec > 0) || !(burst >= 1) || !(maxKeys >= 1)) {
      throw new RangeError(`rate limit needs ratePerSec > 0, burst >= 1, maxKeys >= 1`);
    }
  }

  /** Spends one token of `key`, or throws RateLimitedError. */
  take(key: string, now = performance.now()): void {
    const bucket = this.#buckets.get(key);
    const tokens = bucket ? this.#refilled(bucket, now) : this.#opts.burst;
    this.#buckets.delete(key);
    if (tokens >= 1) {
      this.#buckets.set(key, { tokens: tokens - 1, at: now, refused: 0 });
      this.#forget(now);
      return;
    }
    const refused = (bucket?.refused ?? 0) + 1;
    this.#buckets.set(key, { tokens, at: now, refused });
    const retryAfterSec = Math.max(1, Math.ceil((1 - tokens) / this.#opts.ratePerSec));
    throw new RateLimitedError(this.scope, key, retryAfterSec, refused === 1);
  }

  /** Keys currently tracked. */
  get size(): number {
    return this.#buckets.size;
  }

  #refilled(bucket: Bucket, now: number): number {
    return Math.min(this.#opts.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.#opts.ratePerSec);
  }

  /**
   * From the least recently seen: drops keys whose bucket is full again (forgetting them changes nothing), then
   * any beyond maxKeys. Stops at the first key still needed, so each call costs O(1) amortized.
   */
  #forget(now: number): void {
    for (const [key, bucket] of this.#buckets) {
      const idle = this.#refilled(bucket, now) >= this.#opts.burst;
      if (!idle && this.#buckets.size <= this.#opts.maxKeys) return;
      this.#buckets.delete(key);
    }
  }
}
