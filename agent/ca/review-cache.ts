import { createHash } from "node:crypto";
import { IdentityError } from "../identity/errors.js";
import type { ReviewedCaller, TokenReviewer } from "./token-reviewer.js";

export interface ReviewCacheOptions {
  /**
   * How long a valid token's answer is reused. 30 s: a node agent signs ~100 identities at start-up with one token
   * (one review), and a revoked token (its pod deleted) is honoured at most this much longer; issuance still needs
   * the pod to be on the caller's node.
   */
  validTtlMs?: number;
  /** How long an invalid token's answer is reused: the same bad token again costs nothing for 10 s. */
  invalidTtlMs?: number;
  /** Entries kept per kind (valid, invalid); the oldest go first. Invalid tokens never evict valid ones. */
  maxEntries?: number;
  /** Reviews running at once; a TokenReview takes milliseconds, so 8 is hundreds per second. */
  maxConcurrent?: number;
  /** Reviews waiting for one of those slots; beyond this, or after waiting maxWaitMs, token_review_busy. */
  maxQueued?: number;
  maxWaitMs?: number;
}

const DEFAULTS: Required<ReviewCacheOptions> = {
  validTtlMs: 30_000,
  invalidTtlMs: 10_000,
  maxEntries: 10_000,
  maxConcurrent: 8,
  maxQueued: 256,
  maxWaitMs: 10_000,
};

interface Waiter {
  start: () => void;
  timer: NodeJS.Timeout;
}

type Answer = ReviewedCaller | undefined;

/**
 * Puts a bound on what bearer tokens cost the reviewer behind it (the API server): answers are cached briefly,
 * valid and invalid alike, keyed by the token's SHA-256 (the token itself is never kept); concurrent reviews of one
 * token share one request; at most maxConcurrent reviews run, a bounded queue waits. A reviewer error (API server
 * down) is passed on and not cached, so the next request asks again.
 */
export class CachingTokenReviewer implements TokenReviewer {
  readonly #inner: TokenReviewer;
  readonly #opts: Required<ReviewCacheOptions>;
  // One TTL per map and re-insertion on update keep both maps in expiry order: the first entry is the oldest.
  readonly #valid = new Map<string, { caller: ReviewedCaller; until: number }>();
  readonly #invalid = new Map<string, number>();
  readonly #inflight = new Map<string, Promise<Answer>>();
  readonly #queue: Waiter[] = [];
  #running = 0;

  constructor(inner: TokenReviewer, options: ReviewCacheOptions = {}) {
    this.#inner = inner;
    this.#opts = { ...DEFAULTS, ...options };
  }

  /** `admit` is called only when a review must actually be made: not for a cached answer or one already asked. */
  review(token: string, admit?: () => void): Promise<Answer> {
    const key = createHash("sha256").update(token).digest("base64");
    const now = performance.now();
    const valid = this.#valid.get(key);
    if (valid && valid.until > now) return Promise.resolve(valid.caller);
    const invalidUntil = this.#invalid.get(key);
    if (invalidUntil !== undefined && invalidUntil > now) return Promise.resolve(undefined);
    const pending = this.#inflight.get(key);
    if (pending) return pending;
    try {
      admit?.();
    } catch (err) {
      return Promise.reject(err);
    }
    const review = this.#reviewOnce(key, token).finally(() => this.#inflight.delete(key));
    this.#inflight.set(key, review);
    return review;
  }

  async #reviewOnce(key: string, token: string): Promise<Answer> {
    await this.#slot();
    try {
      const caller = await this.#inner.review(token);
      this.#remember(key, caller);
      return caller;
    } finally {
      this.#release();
    }
  }

  #remember(key: string, caller: Answer): void {
    const now = performance.now();
    const { maxEntries } = this.#opts;
    if (caller) {
      this.#valid.delete(key);
      this.#valid.set(key, { caller, until: now + this.#opts.validTtlMs });
      for (const [k, v] of this.#valid) {
        if (this.#valid.size <= maxEntries && v.until > now) break;
        this.#valid.delete(k);
      }
    } else {
      this.#invalid.delete(key);
      this.#invalid.set(key, now + this.#opts.invalidTtlMs);
      for (const [k, until] of this.#invalid) {
        if (this.#invalid.size <= maxEntries && until > now) break;
        this.#invalid.delete(k);
      }
    }
  }

  #slot(): Promise<void> {
    if (this.#running < this.#opts.maxConcurrent) {
      this.#running += 1;
      return Promise.resolve();
    }
    const busy = (why: string) =>
      new IdentityError("token_review_busy", `${this.#opts.maxConcurrent} token reviews running, ${why}`);
    if (this.#queue.length >= this.#opts.maxQueued) {
      return Promise.reject(busy(`${this.#queue.length} waiting`));
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        start: resolve,
        timer: setTimeout(() => {
          this.#queue.splice(this.#queue.indexOf(waiter), 1);
          reject(busy(`none free within ${this.#opts.maxWaitMs} ms`));
        }, this.#opts.maxWaitMs).unref(),
      };
      this.#queue.push(waiter);
    });
  }

  /** A finished review hands its slot to the next waiter, if any. */
  #release(): void {
    const next = this.#queue.shift();
    if (!next) {
      this.#running -= 1;
      return;
    }
    clearTimeout(next.timer);
    next.start();
  }
}
