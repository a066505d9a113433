/**
 * Reconnect delays: capped exponential backoff with full jitter (a uniformly random delay between 0 and the
 * exponential bound), so agents on every node that lost the API server at the same instant do not come back in
 * step; plus Retry-After parsing. Pure, with the random source injectable.
 */

export interface BackoffPolicy {
  /** Bound of the first delay; doubles per consecutive failure. */
  baseMs: number;
  capMs: number;
}

/** Delay before retry number `attempt` (0 = the first retry after a failure). */
export function backoffDelayMs(attempt: number, policy: BackoffPolicy, random: () => number = Math.random): number {
  const bound = Math.min(policy.capMs, policy.baseMs * 2 ** Math.min(attempt, 40));
  return Math.floor(random() * bound);
}

/** Counts consecutive failures; reset() after a healthy period. */
export class Backoff {
  readonly #policy: BackoffPolicy;
  readonly #random: () => number;
  #attempt = 0;

  constructor(policy: BackoffPolicy, random: () => number = Math.random) {
    this.#policy = policy;
    this.#random = random;
  }

  get attempt(): number {
    return this.#attempt;
  }

  /** The next delay; also counts the failure. */
  next(): number {
    return backoffDelayMs(this.#attempt++, this.#policy, this.#random);
  }

  reset(): void {
    this.#attempt = 0;
  }
}

/**
 * Retry-After as the API server sends it (seconds; the HTTP-date form too), in ms, capped at `maxMs`; undefined
 * when absent or unusable.
 */
export function parseRetryAfter(
  value: string | string[] | undefined,
  maxMs: number,
  now = Date.now(),
): number | undefined {
  if (typeof value !== "string") return undefined;
  const v = value.trim();
  if (/^\d{1,9}$/.test(v)) return Math.min(maxMs, Number(v) * 1000);
  // The IMF-fixdate form only ("Wed, 21 Oct 2015 07:28:00 GMT"): Date.parse accepts far more (even "-1").
  if (!/^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/.test(v)) return undefined;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.min(maxMs, Math.max(0, at - now));
}
