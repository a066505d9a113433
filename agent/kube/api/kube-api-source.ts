import { Agent } from "node:https";
import { type Logger, silentLogger } from "../../log.js";
import type { ApiRequestConfig } from "./config.js";
import { KubeApiError } from "./errors.js";
import { ListWatch, type ListWatchTiming } from "./list-watch.js";
import type { WatchObserver, WatchStatus } from "./watch-status.js";
import type { WatchedResource, WatchSink } from "./watched-resource.js";

/**
 * The cluster as the API server tells it: one list-watch per resource, all feeding one sink.
 *
 * Start-up: start() resolves once every resource has completed its first list. If that does not happen within
 * `startTimeoutMs` (API server unreachable, RBAC missing), start() rejects with a `not_synced` KubeApiError naming
 * what is missing, but the list-watches go on trying: the caller logs it and keeps waiting on `synced` (or exits).
 * It must not act on the sink before that: an agent that enrolled (or, worse, unenrolled) pods from a view with no
 * pods in it would tear down every meshed pod's redirection on a node whose API server is merely slow. So the
 * decision is: never start from nothing; wait, and say why in health() and the logs meanwhile.
 */

export interface KubeApiSourceOptions {
  config: ApiRequestConfig;
  resources: readonly WatchedResource[];
  sink: WatchSink;
  logger?: Logger;
  observer?: WatchObserver;
  timing?: Partial<ListWatchTiming>;
  /** start() gives up waiting (and rejects) after this long; default 60 s. */
  startTimeoutMs?: number;
  /** health() reports a resource whose watch has been down this long; default 15 s (a normal re-watch is ~0). */
  unhealthyAfterMs?: number;
  random?: () => number;
}

export interface SourceHealth {
  ok: boolean;
  /** One line per resource that is not being followed, e.g. "pods: watch not established for 12 s: connect ...". */
  reasons: string[];
}

export class KubeApiSource {
  readonly #loops: ListWatch[];
  readonly #agent: Agent;
  readonly #log: Logger;
  readonly #startTimeoutMs: number;
  readonly #unhealthyAfterMs: number;
  readonly #startedAt = Date.now();
  #started = false;
  #closed = false;
  #closing: (() => void) | undefined;
  /** Resolves once every resource has completed its first list (no timeout: see start()); never if closed first. */
  readonly synced: Promise<void>;

  constructor(options: KubeApiSourceOptions) {
    const names = options.resources.map((r) => r.resource);
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup !== undefined) throw new KubeApiError("kubeconfig_invalid", `resource "${dup}" is watched twice`);
    this.#log = (options.logger ?? silentLogger).child({ component: "kube-api-source" });
    this.#startTimeoutMs = options.startTimeoutMs ?? 60_000;
    this.#unhealthyAfterMs = options.unhealthyAfterMs ?? 15_000;
    // One keep-alive pool for every resource: list pages and re-watches reuse connections instead of a TLS
    // handshake each (a relist of 10,000 ~3.6 KiB pods in 20 pages: ~1.4 s with it, ~1.8-2.5 s without, measured
    // with relist-10k.test.ts); TCP keep-alive probes also notice a peer that vanished without a FIN.
    this.#agent = new Agent({ keepAlive: true, keepAliveMsecs: 30_000 });
    this.#loops = options.resources.map(
      (resource) =>
        new ListWatch({
          resource,
          sink: options.sink,
          config: options.config,
          agent: this.#agent,
          logger: options.logger,
          observer: options.observer,
          timing: options.timing,
          random: options.random,
        }),
    );
    this.synced = Promise.all(this.#loops.map((l) => l.firstList)).then(() => {});
    this.#log.info({ server: options.config.describe(), resources: names }, "following the Kubernetes API server");
  }

  /**
   * Starts every list-watch; resolves when each has completed its first list. Rejects with a `not_synced`
   * KubeApiError after startTimeoutMs (the list-watches keep going; await `synced` to wait on), or `closed` if
   * close() comes first.
   */
  async start(): Promise<void> {
    if (this.#closed) throw new KubeApiError("closed", "the source is closed");
    if (!this.#started) {
      this.#started = true;
      for (const l of this.#loops) l.start();
    }
    let timer: NodeJS.Timeout | undefined;
    const outcome = await new Promise<"synced" | "timeout" | "closed">((resolve) => {
      this.synced.then(() => resolve("synced"));
      timer = setTimeout(() => resolve("timeout"), this.#startTimeoutMs);
      this.#closing = () => resolve("closed");
    });
    clearTimeout(timer);
    this.#closing = undefined;
    if (outcome === "synced") {
      this.#log.info({ seconds: (Date.now() - this.#startedAt) / 1000 }, "every resource listed; following changes");
      return;
    }
    if (outcome === "closed")
      throw new KubeApiError("closed", "the source was closed before its first lists completed");
    const missing = this.health().reasons;
    throw new KubeApiError(
      "not_synced",
      `not every resource listed within ${this.#startTimeoutMs / 1000} s (still trying): ${missing.join("; ")}`,
    );
  }

  status(): WatchStatus[] {
    return this.#loops.map((l) => l.status());
  }

  health(now = Date.now()): SourceHealth {
    const reasons: string[] = [];
    for (const s of this.status()) {
      const cause = s.lastError && s.downSince !== undefined && s.lastError.at >= s.downSince ? s.lastError : undefined;
      const why = cause ? `: ${cause.message}` : "";
      if (!s.listed) {
        const since = Math.round((now - this.#startedAt) / 1000);
        reasons.push(`${s.resource}: not listed yet after ${since} s${why || (this.#started ? "" : ": not started")}`);
      } else if (!s.absent && !s.watching && s.downSince !== undefined && now - s.downSince >= this.#unhealthyAfterMs) {
        reasons.push(`${s.resource}: watch not established for ${Math.round((now - s.downSince) / 1000)} s${why}`);
      }
    }
    return { ok: reasons.length === 0, reasons };
  }

  /** Stops every list-watch; resolves when no request, socket or timer of the source is left. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing?.();
    await Promise.all(this.#loops.map((l) => l.close()));
    this.#agent.destroy();
  }
}
