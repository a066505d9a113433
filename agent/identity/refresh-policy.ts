/** When to renew and when to retry: pure arithmetic, so it is tested without waiting. */

export interface RetryPolicy {
  initialMs: number;
  maxMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { initialMs: 1000, maxMs: 60_000 };
export const DEFAULT_JITTER = 0.1;
// setTimeout fires at once for delays above 2^31-1 ms; long waits are clamped (the timer just fires early).
const MAX_TIMER_MS = 2 ** 31 - 1;

function jittered(ms: number, jitter: number, random: () => number): number {
  return ms * (1 + (2 * random() - 1) * jitter);
}

/**
 * Renew halfway through the time left from receipt (not from notBefore, which is backdated): half the lifetime
 * stays as margin for CA outages. Jitter (±10%) spreads the renewals of identities issued together (agent start)
 * so they do not all hit the CA at the same instant again.
 */
export function refreshDelayMs(
  receivedAt: number,
  notAfter: number,
  jitter = DEFAULT_JITTER,
  random = Math.random,
): number {
  const remaining = Math.max(0, notAfter - receivedAt);
  return Math.min(MAX_TIMER_MS, Math.max(0, Math.round(jittered(remaining / 2, jitter, random))));
}

/** Exponential backoff after `failures` consecutive failures (1 = first), capped, with the same jitter. */
export function retryDelayMs(
  failures: number,
  policy: RetryPolicy = DEFAULT_RETRY,
  jitter = DEFAULT_JITTER,
  random = Math.random,
): number {
  const base = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.max(0, failures - 1));
  return Math.min(MAX_TIMER_MS, Math.max(1, Math.round(jittered(base, jitter, random))));
}

/** Delay until `atMs`, safe for setTimeout. */
export function delayUntil(atMs: number, now: number): number {
  return Math.min(MAX_TIMER_MS, Math.max(0, atMs - now));
}
