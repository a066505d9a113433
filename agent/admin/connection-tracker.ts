/**
 * Live connections and a bounded ring of recently closed ones, for `/connections` and `ambit tap`. Memory is
 * bounded by what is open plus `recent`, whatever the traffic.
 */
import type { ConnectionEnd, ConnectionInfo, ProxyObserver } from "../proxy/observer.js";

export interface ConnectionRow {
  id: number;
  reporter: "source" | "destination";
  pod: string;
  source: { workload: string; namespace: string; principal: string; ip: string };
  destination: { workload: string; namespace: string; principal: string; ip: string; port: number };
  tls: boolean;
  startedAt: string;
  state: "open" | "closed";
  /** Closed connections only. */
  sent?: number;
  received?: number;
  durationMs: number;
  error?: string;
}

export interface ConnectionsSnapshot {
  live: ConnectionRow[];
  recent: ConnectionRow[];
}

function row(info: ConnectionInfo, now: number, end?: ConnectionEnd): ConnectionRow {
  return {
    id: info.id,
    reporter: info.reporter,
    pod: info.pod,
    source: { ...info.source },
    destination: { ...info.destination },
    tls: info.tls,
    startedAt: new Date(info.startedAt).toISOString(),
    state: end ? "closed" : "open",
    ...(end ? { sent: end.sent, received: end.received } : {}),
    durationMs: end ? end.durationMs : now - info.startedAt,
    ...(end?.error ? { error: end.error } : {}),
  };
}

export class ConnectionTracker implements ProxyObserver {
  readonly #live = new Map<number, ConnectionInfo>();
  readonly #recent: ConnectionRow[] = [];
  readonly #capacity: number;
  #next = 0;

  constructor(options: { recent?: number } = {}) {
    this.#capacity = Math.max(1, options.recent ?? 256);
  }

  handshake(): void {}

  connectionOpened(info: ConnectionInfo): void {
    this.#live.set(info.id, info);
  }

  connectionClosed(info: ConnectionInfo, end: ConnectionEnd): void {
    this.#live.delete(info.id);
    const r = row(info, Date.now(), end);
    // A ring: overwrite the oldest slot once full, so closing is O(1) however busy the node is.
    if (this.#recent.length < this.#capacity) this.#recent.push(r);
    else this.#recent[this.#next] = r;
    this.#next = (this.#next + 1) % this.#capacity;
  }

  connectionRefused(): void {}

  connectionDenied(): void {}

  /** Live connections by start, recent closed ones oldest first. */
  snapshot(now = Date.now()): ConnectionsSnapshot {
    const live = [...this.#live.values()].sort((a, b) => a.id - b.id).map((i) => row(i, now));
    const recent =
      this.#recent.length < this.#capacity
        ? [...this.#recent]
        : [...this.#recent.slice(this.#next), ...this.#recent.slice(0, this.#next)];
    return { live, recent };
  }
}
