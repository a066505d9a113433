import type { ServerResponse } from "node:http";
import type { Status } from "./status.js";
import { eventForWatcher, objectJson, type StoredObject, type StoreEvent } from "./store.js";

/**
 * One open watch: newline-delimited JSON events in a chunked 200 response, as the real API server streams them.
 * Applies the watcher's selectors to each event (an object leaving the selection is sent as DELETED), sends
 * periodic BOOKMARKs when asked for, ends cleanly at its timeout, and can be stalled (nothing at all is written,
 * not even headers or bookmarks; events queue) or dropped (socket destroyed, no final chunk).
 */

export interface WatchStreamOptions {
  res: ServerResponse;
  resource: string;
  kind: string;
  apiVersion: string;
  matches: (obj: StoredObject) => boolean;
  /** Only events after this resourceVersion are sent (a watch from a future resourceVersion waits for it). */
  sinceRv: number;
  /** 0: no bookmarks. */
  bookmarkIntervalMs: number;
  timeoutMs: number;
  currentRv: () => number;
  stalled: boolean;
  /**
   * A client that does not read: once this much is buffered the watch is ended, as the real server terminates a
   * watcher whose buffer is full; the client then resumes from the last resourceVersion it saw.
   */
  maxBufferedBytes: number;
  /** Events kept for a stalled watch; past this it ends at resume, like a watcher that fell too far behind. */
  maxQueuedEvents: number;
  onClose: (stream: WatchStream) => void;
}

export const INITIAL_EVENTS_END = "k8s.io/initial-events-end";

export class WatchStream {
  readonly resource: string;
  readonly #o: WatchStreamOptions;
  #queue: string[] = [];
  #overflowed = false;
  #stalled: boolean;
  #headersSent = false;
  /** End after the next flush (timeout while stalled, an ERROR event, a full buffer). */
  #endPending = false;
  #closed = false;
  #bookmarkTimer: NodeJS.Timeout | undefined;
  #timeoutTimer: NodeJS.Timeout | undefined;

  constructor(options: WatchStreamOptions) {
    this.#o = options;
    this.resource = options.resource;
    this.#stalled = options.stalled;
    options.res.on("close", () => this.#finish());
    if (options.bookmarkIntervalMs > 0) {
      this.#bookmarkTimer = setInterval(() => this.#periodicBookmark(), options.bookmarkIntervalMs);
    }
    this.#timeoutTimer = setTimeout(() => {
      this.#endPending = true;
      if (!this.#stalled) this.#flush();
    }, options.timeoutMs);
    this.#flush();
  }

  /** Synthetic ADDED events for the current state (watch from "" or "0", or sendInitialEvents). */
  initial(objects: Iterable<StoredObject>): void {
    for (const o of objects)
      if (this.#o.matches(o)) this.#push("ADDED", objectJson(o, this.#o.kind, this.#o.apiVersion));
    this.#flush();
  }

  /** A store event, as this watcher sees it (if at all). */
  offer(event: StoreEvent): void {
    if (event.rv <= this.#o.sinceRv || this.#endPending) return;
    const seen = eventForWatcher(event, this.#o.matches);
    if (!seen) return;
    this.#push(seen.type, objectJson(seen.object, this.#o.kind, this.#o.apiVersion));
    this.#flush();
  }

  /** A BOOKMARK at `rv`: an object of the watched kind with only metadata.resourceVersion (and annotations). */
  bookmark(rv: number, annotations?: Record<string, string>): void {
    const metadata = annotations ? { resourceVersion: String(rv), annotations } : { resourceVersion: String(rv) };
    this.#push("BOOKMARK", JSON.stringify({ kind: this.#o.kind, apiVersion: this.#o.apiVersion, metadata }));
    this.#flush();
  }

  /** An ERROR event carrying `status`, after which the stream ends (the real server's 410 Expired). */
  error(status: Status): void {
    this.#push("ERROR", JSON.stringify(status));
    this.#endPending = true;
    this.#flush();
  }

  stall(): void {
    this.#stalled = true;
  }

  resume(): void {
    this.#stalled = false;
    this.#flush();
  }

  /** Abrupt: the connection is destroyed, the client sees no final chunk. */
  drop(): void {
    this.#o.res.socket?.destroy();
    this.#finish();
  }

  #periodicBookmark(): void {
    const rv = this.#o.currentRv();
    if (!this.#stalled && !this.#endPending && rv >= this.#o.sinceRv) this.bookmark(rv);
  }

  #push(type: string, objectText: string): void {
    if (this.#closed || this.#overflowed) return;
    if (this.#stalled && this.#queue.length >= this.#o.maxQueuedEvents) {
      this.#overflowed = true;
      this.#queue = [];
      this.#endPending = true;
      return;
    }
    this.#queue.push(`{"type":"${type}","object":${objectText}}\n`);
  }

  #flush(): void {
    if (this.#closed || this.#stalled) return;
    const res = this.#o.res;
    if (!this.#headersSent) {
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-cache, private" });
      res.flushHeaders();
      this.#headersSent = true;
    }
    for (const line of this.#queue) res.write(line);
    this.#queue = [];
    if (res.writableLength > this.#o.maxBufferedBytes) this.#endPending = true;
    if (this.#endPending) {
      res.end();
      this.#finish();
    }
  }

  #finish(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    clearInterval(this.#bookmarkTimer);
    clearTimeout(this.#timeoutTimer);
    this.#o.onClose(this);
  }
}
