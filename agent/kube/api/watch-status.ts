import { KubeApiError } from "./errors.js";

/**
 * What a list-watch reports about itself: why it restarted (a closed set: metric label values), relists, the
 * newest event, whether the first list completed, the last error. Types and the pure classification.
 */

export const RESTART_REASONS = [
  /** The watch ended cleanly after its timeoutSeconds: the normal, planned rotation. */
  "timeout",
  /** The server ended the watch cleanly before its time (e.g. it dropped a slow watcher, or is shutting down). */
  "closed",
  /** Connection refused/reset, TLS failure, a request timeout, garbage in the stream. */
  "error",
  /** No event and no bookmark for stallMs: the watchdog cut the connection. */
  "stalled",
  /** 410 Gone/Expired: the resourceVersion is compacted away; a relist follows. */
  "expired",
  "http_3xx",
  "http_4xx",
  "http_5xx",
] as const;

export type RestartReason = (typeof RESTART_REASONS)[number];

/** The restart reason for a failed list or watch request. */
export function restartReasonOf(err: unknown): RestartReason {
  if (!(err instanceof KubeApiError) || err.code !== "http_status" || err.httpStatus === undefined) return "error";
  if (err.httpStatus === 410) return "expired";
  const cls = Math.floor(err.httpStatus / 100);
  if (cls === 3) return "http_3xx";
  if (cls === 4) return "http_4xx";
  if (cls === 5) return "http_5xx";
  return "error";
}

export interface WatchStatus {
  resource: string;
  /** The collection path in use (the first that is served), once known. */
  path: string | undefined;
  /** The first list completed (or, for an optional resource, every path answered 404). */
  listed: boolean;
  /** Optional and not served: treated as empty, re-checked periodically. */
  absent: boolean;
  /** A watch is open and has answered 200. */
  watching: boolean;
  /** Since when (ms epoch) no watch has been established; undefined while watching (or absent). */
  downSince: number | undefined;
  /** Last resourceVersion seen (list, event or bookmark). */
  resourceVersion: string;
  /** When (ms epoch) the newest event, bookmark or completed list arrived. */
  newestEventAt: number | undefined;
  /** Lists after the first one (410, a 404 on watch, an optional resource re-checked). */
  relists: number;
  restarts: Record<RestartReason, number>;
  lastError: { message: string; reason: RestartReason; at: number } | undefined;
}

/** Hooks for metrics; every method is optional and must not throw (a throw is logged and ignored). */
export interface WatchObserver {
  /** A list-watch for `resource` exists (series can be initialised at zero). */
  attached?(resource: string): void;
  /** A list completed: `relist` false for the first one. */
  listed?(resource: string, info: { items: number; pages: number; seconds: number; relist: boolean }): void;
  restarted?(resource: string, reason: RestartReason): void;
  /** An event or bookmark (or a completed list) arrived at `atMs`. */
  activity?(resource: string, atMs: number): void;
}

export function emptyRestarts(): Record<RestartReason, number> {
  return Object.fromEntries(RESTART_REASONS.map((r) => [r, 0])) as Record<RestartReason, number>;
}
