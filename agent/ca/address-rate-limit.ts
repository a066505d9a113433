import { IdentityError } from "../identity/errors.js";

export interface AddressRateLimitOptions {
  /** Tokens each source address earns per second. */
  ratePerSec?: number;
  /** What an address may spend at once (and what an address not seen for a while starts with). */
  burst?: number;
  /** Addresses tracked; the least recently seen is forgotten first (it then starts again with a full burst). */
  maxAddresses?: number;
}

/**
 * Defaults for the CA's token reviews: 20 at once, then 2 per second, per source address. Only reviews that reach
 * the API server are charged (see ca-server.ts), and an agent needs one per token per cache lifetime, so a node's
 * agent never comes near this; an address sending unknown tokens is held to 2 reviews a second.
 */
export const DEFAULT_ADDRESS_RATE_LIMIT: Required<AddressRateLimitOptions> = {
  ratePerSec: 2,
  burst: 20,
  maxAddresses: 10_000,
};

/** Refused by the limiter: answered 429 with Retry-After. */
export class RateLimitedError extends IdentityError {
  constructor(
    readonly address: string,
    readonly retryAfterSec: number,
    /** The first refusal since this address was last admitted (worth a warning; the rest are not). */
    readonly first: boolean,
  ) {
    super("rate_limited", `too many token reviews from ${address}; retry in ${retryAfterSec} s`);
  }
}

interface Bucket {
  tokens: number;
  at: number;
  refused: number;
}

/** A token bucket per source address, in a bounded map that forgets addresses once their bucket is full again. */
export class AddressRateLimiter {
  readonly #opts: Required<AddressRateLimitOptions>;
  // Re-inserted on every use, so iteration starts at the address seen least recently.
  readonly #buckets = new Map<string, Bucket>();

  constructor(options: AddressRateLimitOptions = {}) {
    this.#opts = { ...DEFAULT_ADDRESS_RATE_LIMIT, ...options };
    const { ratePerSec, burst, maxAddresses } = this.#opts;
    if (!(ratePerSec > 0) || !(burst >= 1) || !(maxAddresses >= 1)) {
      throw new RangeError(`rate limit needs ratePerSec > 0, burst >= 1, maxAddresses >= 1`);
    }
  }

  /** Spends one token of `address`, or throws RateLimitedError. */
  take(address: string, now = performance.now()): void {
    const bucket = this.#buckets.get(address);
    const tokens = bucket ? this.#refilled(bucket, now) : this.#opts.burst;
    this.#buckets.delete(address);
    if (tokens >= 1) {
      this.#buckets.set(address, { tokens: tokens - 1, at: now, refused: 0 });
      this.#forget(now);
      return;
    }
    const refused = (bucket?.refused ?? 0) + 1;
    this.#buckets.set(address, { tokens, at: now, refused });
    const retryAfterSec = Math.max(1, Math.ceil((1 - tokens) / this.#opts.ratePerSec));
    throw new RateLimitedError(address, retryAfterSec, refused === 1);
  }

  /** Addresses currently tracked. */
  get size(): number {
    return this.#buckets.size;
  }

  #refilled(bucket: Bucket, now: number): number {
    return Math.min(this.#opts.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.#opts.ratePerSec);
  }

  /**
   * From the least recently seen: drops addresses whose bucket is full again (forgetting them changes nothing),
   * then any beyond maxAddresses. Stops at the first address still needed, so each call costs O(1) amortized.
   */
  #forget(now: number): void {
    for (const [address, bucket] of this.#buckets) {
      const idle = this.#refilled(bucket, now) >= this.#opts.burst;
      if (!idle && this.#buckets.size <= this.#opts.maxAddresses) return;
      this.#buckets.delete(address);
    }
  }
}
