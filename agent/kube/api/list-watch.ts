import type { IncomingMessage } from "node:http";
import type { Agent } from "node:https";
import { type Logger, silentLogger } from "../../log.js";
import { LogThrottle } from "../../log-throttle.js";
import { getJson, openStream, type RequestContext } from "./api-request.js";
import { Backoff, type BackoffPolicy } from "./backoff.js";
import type { ApiRequestConfig } from "./config.js";
import { KubeApiError } from "./errors.js";
import { LineSplitter, parseWatchLine } from "./watch-event.js";
import {
  emptyRestarts,
  type RestartReason,
  restartReasonOf,
  type WatchObserver,
  type WatchStatus,
} from "./watch-status.js";
import type { WatchedResource, WatchSink } from "./watched-resource.js";

/**
 * One resource followed with list + watch, forever, on node:https: LIST (paginated) -> sink.replace -> WATCH from
 * the list's resourceVersion, re-watching from the last resourceVersion seen whenever a watch ends, relisting only
 * when the API server says that resourceVersion is gone (410) or the path stops being served (404).
 *
 * Not @kubernetes/client-node's informer (ListWatch + Watch in 1.4.0), whose failure modes are the ones an agent
 * cannot afford: its watch request has no timeout of its own (the AbortSignal.timeout it builds is overwritten on
 * the next line), asks for no bookmarks and no timeoutSeconds, and has no watchdog, so a connection that dies
 * without a FIN stalls it silently (kubernetes-client/javascript#364, #596, #958: "stops receiving updates ...
 * without any error nor connect event"); it skips lines that fail to parse; it re-watches at once, with no backoff,
 * whenever a watch ends, so a server that closes watches straight away is hit in a tight loop (#1933: "tens of
 * watch requests per second ... after the connection has been lost then re-established"); and on any other error
 * it stops for good until the caller restarts it (#795). Here: every wait is bounded, a watchdog cuts a watch that
 * sent neither event nor bookmark for stallMs, reconnects back off with full jitter, and relists happen only on 410.
 */

export interface ListWatchTiming {
  /** Items per list page (limit/continue). */
  pageSize: number;
  /** timeoutSeconds of each watch, uniformly random in [min, max], so watches do not live forever nor align. */
  watchTimeoutSeconds: { min: number; max: number };
  /** No event and no bookmark for this long: the watch is cut and re-opened (the real server bookmarks ~1/min). */
  stallMs: number;
  /** Connection + response headers of any request (a watch's headers come at once on the real server). */
  requestTimeoutMs: number;
  /** A whole list page, body included. */
  listTimeoutMs: number;
  backoff: BackoffPolicy;
  /** A watch open this long resets the backoff. */
  healthyAfterMs: number;
  /** An optional resource that is not served is looked for again this often. */
  absentRecheckMs: number;
  /** Retry-After above this is capped. */
  maxRetryAfterMs: number;
  /** Longest watch event line. */
  maxLineBytes: number;
  /** Largest list page. */
  maxPageBytes: number;
  /** Most items one list may have in total (a bound on memory whatever the server sends). */
  maxListItems: number;
}

export const DEFAULT_TIMING: ListWatchTiming = {
  pageSize: 500,
  watchTimeoutSeconds: { min: 300, max: 600 },
  stallMs: 120_000,
  requestTimeoutMs: 10_000,
  listTimeoutMs: 60_000,
  backoff: { baseMs: 250, capMs: 30_000 },
  healthyAfterMs: 60_000,
  absentRecheckMs: 60_000,
  maxRetryAfterMs: 300_000,
  // The API server refuses objects above ~1.5 MiB (etcd's request limit), so a longer line is not an event.
  maxLineBytes: 16 * 1024 * 1024,
  // 500 pods of a few KiB to ~20 KiB each are 2-10 MiB; 256 MiB stays well under V8's longest string (~512 MiB).
  maxPageBytes: 256 * 1024 * 1024,
  maxListItems: 1_000_000,
};

export interface ListWatchOptions {
  resource: WatchedResource;
  sink: WatchSink;
  config: ApiRequestConfig;
  /** Shared keep-alive agent (the source owns and destroys it). */
  agent: Agent;
  logger?: Logger;
  observer?: WatchObserver;
  timing?: Partial<ListWatchTiming>;
  random?: () => number;
}

/** How one watch ended. */
interface WatchEnd {
  reason: RestartReason;
  error?: KubeApiError;
  /** The resourceVersion is gone or the path no longer served: list again. */
  relist: boolean;
  /** It had been open for healthyAfterMs. */
  healthy: boolean;
}

/** A Status code as a restart reason (an ERROR event in the stream). */
function statusReason(code: number | undefined): RestartReason {
  return restartReasonOf(
    code === undefined ? new Error("no code") : new KubeApiError("http_status", "", { httpStatus: code }),
  );
}

function objectOrUndefined(v: unknown): Record<string, unknown> | undefined {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

export class ListWatch {
  readonly #r: WatchedResource;
  readonly #sink: WatchSink;
  readonly #timing: ListWatchTiming;
  readonly #log: Logger;
  readonly #observer: WatchObserver;
  readonly #random: () => number;
  readonly #backoff: Backoff;
  readonly #abort = new AbortController();
  readonly #ctx: RequestContext;
  readonly #throttle = new LogThrottle({ intervalMs: 60_000, maxKeys: 64 });
  #running: Promise<void> | undefined;
  #closed = false;
  // status
  #path: string | undefined;
  #listed = false;
  #absent = false;
  #watching = false;
  #downSince: number | undefined = Date.now();
  #rv = "";
  #newestEventAt: number | undefined;
  #relists = 0;
  readonly #restarts = emptyRestarts();
  #lastError: WatchStatus["lastError"];
  /** Consecutive failures, for log lines that say when things recovered. */
  #failing = 0;
  #listedOnce: () => void = () => {};
  /** Resolves when the first list completed (or the optional resource was found absent). */
  readonly firstList: Promise<void>;

  constructor(options: ListWatchOptions) {
    if (options.resource.paths.length === 0) {
      throw new KubeApiError("kubeconfig_invalid", `resource ${options.resource.resource} has no path`);
    }
    this.#r = options.resource;
    this.#sink = options.sink;
    this.#timing = { ...DEFAULT_TIMING, ...options.timing };
    this.#random = options.random ?? Math.random;
    this.#backoff = new Backoff(this.#timing.backoff, this.#random);
    this.#log = (options.logger ?? silentLogger).child({ component: "kube-watch", resource: this.#r.resource });
    this.#observer = options.observer ?? {};
    this.#ctx = { config: options.config, agent: options.agent, signal: this.#abort.signal };
    this.firstList = new Promise((resolve) => {
      this.#listedOnce = resolve;
    });
    this.#notify("attached", () => this.#observer.attached?.(this.#r.resource));
  }

  get resource(): string {
    return this.#r.resource;
  }

  start(): void {
    if (this.#running || this.#closed) return;
    this.#running = this.#run().catch((err: unknown) => {
      // #run handles every failure itself; reaching this is a bug, and the resource is no longer followed.
      this.#log.error({ err }, "list-watch loop failed unexpectedly; this resource is no longer followed");
    });
  }

  /** Stops: the open request is aborted, timers cleared; resolves when the loop has ended. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#abort.abort();
    await this.#running;
  }

  status(): WatchStatus {
    return {
      resource: this.#r.resource,
      path: this.#path,
      listed: this.#listed,
      absent: this.#absent,
      watching: this.#watching,
      downSince: this.#downSince,
      resourceVersion: this.#rv,
      newestEventAt: this.#newestEventAt,
      relists: this.#relists,
      restarts: { ...this.#restarts },
      lastError: this.#lastError && { ...this.#lastError },
    };
  }

  // ---- the loop ------------------------------------------------------------------------------------------------

  async #run(): Promise<void> {
    let needList = true;
    while (!this.#closed) {
      if (needList) {
        let found: boolean;
        try {
          found = await this.#list();
        } catch (err) {
          if (this.#closed) break;
          const e = err instanceof KubeApiError ? err : new KubeApiError("bad_response", String(err), { cause: err });
          this.#restart(restartReasonOf(e), e, "list");
          await this.#sleep(Math.max(this.#backoff.next(), e.retryAfterMs ?? 0));
          continue;
        }
        if (!found) {
          await this.#sleep(this.#timing.absentRecheckMs);
          continue;
        }
        needList = false;
      }
      const end = await this.#watch();
      if (this.#closed) break;
      if (end.healthy) this.#backoff.reset();
      this.#restart(end.reason, end.error, "watch");
      needList = end.relist;
      // The planned end of a healthy watch is re-opened at once; anything else waits its backoff, so a server
      // that ends watches as soon as they open is not hammered.
      if (end.reason === "timeout" && end.healthy) continue;
      await this.#sleep(Math.max(this.#backoff.next(), end.error?.retryAfterMs ?? 0));
    }
    this.#watching = false;
  }

  /** Lists the first served path into the sink; false when an optional resource is served nowhere. */
  async #list(): Promise<boolean> {
    const started = Date.now();
    for (const path of this.#r.paths) {
      const result = await this.#listPath(path);
      if (result === "not_found") continue;
      const relist = this.#listed;
      if (this.#path !== undefined && this.#path !== path) {
        this.#log.info({ from: this.#path, to: path }, "served at another path now; following that one");
      }
      if (this.#absent) this.#log.info({ path }, "now served; following it");
      this.#path = path;
      this.#absent = false;
      this.#deliver("replace", result.items, () => this.#sink.replace(this.#r.resource, result.items));
      this.#rv = result.resourceVersion;
      this.#listed = true;
      if (relist) this.#relists++;
      const now = Date.now();
      this.#activity(now);
      const seconds = (now - started) / 1000;
      this.#log.info(
        { path, items: result.items.length, pages: result.pages, seconds, resourceVersion: this.#rv },
        relist ? "relisted" : "listed",
      );
      this.#notify("listed", () =>
        this.#observer.listed?.(this.#r.resource, { items: result.items.length, pages: result.pages, seconds, relist }),
      );
      this.#listedOnce();
      return true;
    }
    const paths = this.#r.paths.join(", ");
    if (!this.#r.optional) {
      throw new KubeApiError("http_status", `not served at ${paths} (404): is the API group installed?`, {
        httpStatus: 404,
        reason: "NotFound",
      });
    }
    if (!this.#absent) {
      this.#log.info(
        { paths: this.#r.paths, recheckSeconds: this.#timing.absentRecheckMs / 1000 },
        "not served by the API server (optional: e.g. the CRD is not installed); treated as empty, re-checked periodically",
      );
      this.#absent = true;
      this.#path = undefined;
      this.#deliver("replace", [], () => this.#sink.replace(this.#r.resource, []));
      const relist = this.#listed;
      this.#listed = true;
      this.#downSince = undefined;
      this.#notify("listed", () =>
        this.#observer.listed?.(this.#r.resource, {
          items: 0,
          pages: 0,
          seconds: (Date.now() - started) / 1000,
          relist,
        }),
      );
      if (relist) this.#relists++;
      this.#listedOnce();
    } else {
      this.#log.debug({ paths: this.#r.paths }, "still not served");
    }
    // Knowing it is absent is as fresh a view as an event.
    this.#activity(Date.now());
    return false;
  }

  /** All pages of one path, or "not_found" when its first page answers 404. */
  async #listPath(path: string): Promise<{ items: unknown[]; resourceVersion: string; pages: number } | "not_found"> {
    const items: unknown[] = [];
    let token: string | undefined;
    let pages = 0;
    let resourceVersion = "";
    do {
      const q = this.#selectors();
      q.set("limit", String(this.#timing.pageSize));
      if (token) q.set("continue", token);
      let body: unknown;
      try {
        body = await getJson(this.#ctx, `${path}?${q}`, {
          timeoutMs: this.#timing.listTimeoutMs,
          maxBytes: this.#timing.maxPageBytes,
          maxRetryAfterMs: this.#timing.maxRetryAfterMs,
        });
      } catch (err) {
        if (pages === 0 && err instanceof KubeApiError && err.httpStatus === 404) return "not_found";
        throw err;
      }
      pages++;
      const list = objectOrUndefined(body);
      const meta = objectOrUndefined(list?.metadata);
      const rv = meta?.resourceVersion;
      const page = list?.items === null ? [] : list?.items;
      if (typeof rv !== "string" || rv === "" || !Array.isArray(page)) {
        throw new KubeApiError("bad_response", `list of ${path}: no items or no metadata.resourceVersion`);
      }
      if (items.length + page.length > this.#timing.maxListItems) {
        throw new KubeApiError("bad_response", `list of ${path}: more than ${this.#timing.maxListItems} items`);
      }
      // Built-in types' list items come without kind/apiVersion (the server's serializer drops them); the watch's
      // objects have them. They are put back so the sink sees one shape either way.
      const kind = typeof list?.kind === "string" && list.kind.endsWith("List") ? list.kind.slice(0, -4) : undefined;
      const apiVersion = typeof list?.apiVersion === "string" ? list.apiVersion : undefined;
      for (const item of page) {
        const o = objectOrUndefined(item);
        if (o) {
          if (o.kind === undefined && kind) o.kind = kind;
          if (o.apiVersion === undefined && apiVersion) o.apiVersion = apiVersion;
        }
        items.push(item);
      }
      resourceVersion = rv;
      token = typeof meta?.continue === "string" && meta.continue !== "" ? meta.continue : undefined;
    } while (token !== undefined && !this.#closed);
    if (this.#closed) throw new KubeApiError("closed", "list interrupted: the source is closing");
    return { items, resourceVersion, pages };
  }

  #selectors(): URLSearchParams {
    const q = new URLSearchParams();
    if (this.#r.labelSelector) q.set("labelSelector", this.#r.labelSelector);
    if (this.#r.fieldSelector) q.set("fieldSelector", this.#r.fieldSelector);
    return q;
  }

  /** One watch from the current resourceVersion, until it ends one way or another. */
  async #watch(): Promise<WatchEnd> {
    const { min, max } = this.#timing.watchTimeoutSeconds;
    const timeoutSeconds = min + Math.floor(this.#random() * (max - min + 1));
    const q = this.#selectors();
    q.set("watch", "true");
    q.set("allowWatchBookmarks", "true");
    q.set("resourceVersion", this.#rv);
    q.set("timeoutSeconds", String(timeoutSeconds));
    let res: IncomingMessage;
    try {
      res = await openStream(this.#ctx, `${this.#path}?${q}`, {
        headersTimeoutMs: this.#timing.requestTimeoutMs,
        maxRetryAfterMs: this.#timing.maxRetryAfterMs,
      });
    } catch (err) {
      const e = err instanceof KubeApiError ? err : new KubeApiError("unreachable", String(err), { cause: err });
      // 410: the resourceVersion is compacted; 404: the path went away (a CRD version removed): list again.
      const relist = e.httpStatus === 410 || e.httpStatus === 404;
      return { reason: restartReasonOf(e), error: e, relist, healthy: false };
    }
    const openedAt = Date.now();
    this.#watching = true;
    this.#downSince = undefined;
    if (this.#failing > 0) {
      this.#log.info({ failures: this.#failing, resourceVersion: this.#rv }, "watch re-established");
      this.#failing = 0;
    } else {
      this.#log.debug({ resourceVersion: this.#rv, timeoutSeconds }, "watching");
    }
    return new Promise<WatchEnd>((resolve) => {
      const splitter = new LineSplitter(this.#timing.maxLineBytes);
      let ended = false;
      const end = (e: Omit<WatchEnd, "healthy">) => {
        if (ended) return;
        ended = true;
        clearTimeout(watchdog);
        clearTimeout(hardStop);
        res.destroy();
        this.#watching = false;
        this.#downSince = Date.now();
        resolve({ ...e, healthy: Date.now() - openedAt >= this.#timing.healthyAfterMs });
      };
      const stalled = () =>
        end({
          reason: "stalled",
          error: new KubeApiError("timeout", `watch sent no event and no bookmark for ${this.#timing.stallMs} ms`),
          relist: false,
        });
      let watchdog = setTimeout(stalled, this.#timing.stallMs);
      // The server ends the watch at timeoutSeconds; should it not, the client does, a little later.
      const hardStop = setTimeout(
        () => end({ reason: "timeout", relist: false }),
        timeoutSeconds * 1000 + this.#timing.requestTimeoutMs,
      );
      // close() needs nothing here: the request carries the abort signal, which destroys the response ("error").

      res.on("data", (chunk: Buffer) => {
        if (ended) return;
        let lines: string[];
        try {
          lines = splitter.push(chunk);
        } catch (err) {
          end({ reason: "error", error: err as KubeApiError, relist: false });
          return;
        }
        for (const line of lines) {
          if (ended) return;
          let event: ReturnType<typeof parseWatchLine>;
          try {
            event = parseWatchLine(line);
          } catch (err) {
            end({ reason: "error", error: err as KubeApiError, relist: false });
            return;
          }
          clearTimeout(watchdog);
          watchdog = setTimeout(stalled, this.#timing.stallMs);
          switch (event.kind) {
            case "change": {
              const { type, object } = event;
              if (type === "DELETED") this.#deliver(type, object, () => this.#sink.remove(this.#r.resource, object));
              else this.#deliver(type, object, () => this.#sink.upsert(this.#r.resource, object));
              if (event.resourceVersion) this.#rv = event.resourceVersion;
              this.#activity(Date.now());
              break;
            }
            case "bookmark":
              if (event.resourceVersion) this.#rv = event.resourceVersion;
              this.#activity(Date.now());
              break;
            case "skip":
              this.#throttle.hit(`skip ${event.why}`, (suppressed) =>
                this.#log.warn({ suppressed }, `watch: ${event.why}; event skipped`),
              );
              break;
            case "error": {
              const { status } = event;
              const error = new KubeApiError(
                "http_status",
                `watch ERROR event: ${status.code ?? "no code"} ${status.reason}: ${status.message}`,
                {
                  ...(status.code === undefined ? {} : { httpStatus: status.code }),
                  reason: status.reason,
                  ...(status.retryAfterSeconds === undefined
                    ? {}
                    : { retryAfterMs: Math.min(this.#timing.maxRetryAfterMs, status.retryAfterSeconds * 1000) }),
                },
              );
              end({ reason: statusReason(status.code), error, relist: status.code === 410 });
              return;
            }
          }
        }
      });
      res.on("end", () => {
        const planned = Date.now() - openedAt >= timeoutSeconds * 1000 - 1000;
        end({ reason: planned ? "timeout" : "closed", relist: false });
      });
      const broken = (err?: Error) =>
        end({
          reason: "error",
          error: new KubeApiError("unreachable", `watch connection broke: ${err?.message ?? "closed without an end"}`, {
            cause: err,
          }),
          relist: false,
        });
      res.on("error", broken);
      res.on("close", () => {
        if (!res.complete) broken();
      });
    });
  }

  // ---- effects shared by the loop ------------------------------------------------------------------------------

  #restart(reason: RestartReason, error: KubeApiError | undefined, during: "list" | "watch"): void {
    this.#restarts[reason]++;
    this.#notify("restarted", () => this.#observer.restarted?.(this.#r.resource, reason));
    if (reason === "timeout" || (reason === "closed" && !error)) {
      this.#log.debug({ reason, resourceVersion: this.#rv }, "watch ended; re-watching");
      return;
    }
    const message = error?.message ?? reason;
    this.#lastError = { message, reason, at: Date.now() };
    this.#failing++;
    const next = reason === "expired" ? "relisting" : `retrying (${during === "list" ? "list" : "re-watch"})`;
    const status = error?.httpStatus;
    this.#throttle.hit(`${reason} ${message}`, (suppressed) => {
      const fields = { reason, code: error?.code, httpStatus: status, failures: this.#failing, suppressed };
      if (status === 401) {
        this.#log.error(
          fields,
          `${during} refused: 401 Unauthorized: the credentials were rejected (token expired, rotated or revoked?); ` +
            `${next}, reading the token again`,
        );
      } else if (status === 403) {
        this.#log.error(
          { ...fields, path: this.#path ?? this.#r.paths[0] },
          `${during} refused: 403 Forbidden: RBAC does not allow list/watch of this resource for ambit's service ` +
            `account (check its ClusterRole and binding); ${next}`,
        );
      } else if (reason === "expired") {
        this.#log.info(fields, `resourceVersion ${this.#rv} expired (410); ${next}`);
      } else {
        this.#log.warn(fields, `${during} failed: ${message}; ${next}`);
      }
    });
  }

  #activity(at: number): void {
    this.#newestEventAt = at;
    this.#notify("activity", () => this.#observer.activity?.(this.#r.resource, at));
  }

  /** A sink call; the sink validates and must not throw, but one bad object must not stop the watch either. */
  #deliver(what: string, raw: unknown, call: () => void): void {
    if (this.#closed) return;
    try {
      call();
    } catch (err) {
      const meta = objectOrUndefined(objectOrUndefined(raw)?.metadata);
      this.#log.error(
        { err, namespace: meta?.namespace, name: meta?.name },
        `sink threw on ${what}; the object is skipped, the watch goes on`,
      );
    }
  }

  #notify(hook: string, call: () => void): void {
    try {
      call();
    } catch (err) {
      this.#log.error({ err, hook }, "watch observer threw; ignored");
    }
  }

  #sleep(ms: number): Promise<void> {
    if (ms <= 0 || this.#closed) return Promise.resolve();
    const signal = this.#abort.signal;
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
    });
  }
}
