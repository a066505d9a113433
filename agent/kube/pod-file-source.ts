import { EventEmitter } from "node:events";
import { type FSWatcher, type Stats, unwatchFile, watch, watchFile } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename, dirname, resolve } from "node:path";
import { AmbitError } from "../errors.js";
import { type Logger, silentLogger } from "../log.js";
import type { ClusterState } from "./pod.js";
import { type PodProblem, parsePodFile } from "./pod-validation.js";

export { findNamespace, findPod, findPodByIp } from "./cluster-lookup.js";
export { diffEnrollment, type EnrollmentDiff, enrolledPods, isEmptyDiff, type PodChange } from "./enrollment-diff.js";

/** The pod file could not be read (missing, permissions). */
export class PodFileReadError extends AmbitError {
  constructor(path: string, cause: unknown) {
    super("POD_FILE_UNREADABLE", `cannot read pod file ${path}: ${(cause as Error)?.message ?? cause}`, { cause });
  }
}

export interface PodFileSourceOptions {
  path: string;
  /** Quiet time after the last file event before re-reading; default 50 ms. */
  debounceMs?: number;
  /** stat() polling interval as a fallback where directory events are lost (NFS, some overlays); 0 disables;
   * default 1000 ms. */
  pollIntervalMs?: number;
  logger?: Logger;
}

export interface PodFileSourceEvents {
  /** A valid update changed the state (rejected entries are left out; see `invalid`). */
  change: [state: ClusterState];
  /** Some entries of an otherwise usable file were rejected; the rest was applied. */
  invalid: [problems: PodProblem[]];
  /** The file could not be read or is not a pod file at all; the last good state is kept. */
  error: [err: AmbitError];
}

/**
 * The cluster as described by a local JSON file `{ "namespaces": [...], "pods": [...] }`, followed live.
 *
 * The file's directory is watched rather than the file: producers (editors, ConfigMap volumes, our own writers)
 * replace the file by rename, which a watch on the old inode would miss. Any event in the directory triggers a
 * debounced re-read; identical content is ignored, so `change` fires only when the state actually changed.
 * Watchers do not keep the process alive on their own.
 */
export class PodFileSource extends EventEmitter<PodFileSourceEvents> {
  readonly path: string;
  readonly #debounceMs: number;
  readonly #pollIntervalMs: number;
  readonly #log: Logger;
  #state: ClusterState = { namespaces: [], pods: [] };
  #stateJson = JSON.stringify(this.#state);
  #lastText: string | undefined;
  #watcher: FSWatcher | undefined;
  #polling = false;
  #timer: NodeJS.Timeout | undefined;
  #reloading: Promise<void> | undefined;
  #again = false;
  #started = false;
  #closed = false;

  constructor(options: PodFileSourceOptions) {
    super();
    this.path = resolve(options.path);
    this.#debounceMs = options.debounceMs ?? 50;
    this.#pollIntervalMs = options.pollIntervalMs ?? 1000;
    this.#log = (options.logger ?? silentLogger).child({ component: "pod-file-source", path: this.path });
  }

  /**
   * Reads the file once and starts following it. Rejects (PodFileReadError / PodFileFormatError) if there is no
   * usable file to start from; per-entry problems do not reject (they are emitted as `invalid` and logged).
   */
  async start(): Promise<ClusterState> {
    if (this.#started) throw new AmbitError("POD_SOURCE_STARTED", "pod file source already started");
    this.#started = true;
    const text = await this.#read();
    const result = parsePodFile(text);
    this.#lastText = text;
    this.#apply(result.state, result.problems, false);
    this.#watch();
    this.#log.info({ pods: this.#state.pods.length, namespaces: this.#state.namespaces.length }, "pod file loaded");
    return this.current();
  }

  /** The last good state (a copy the caller may keep). */
  current(): ClusterState {
    return structuredClone(this.#state);
  }

  /** Re-reads the file now (also what file events trigger). Resolves once the state is up to date. */
  async reload(): Promise<void> {
    if (this.#closed) return;
    if (this.#reloading) {
      this.#again = true;
      return this.#reloading;
    }
    this.#reloading = (async () => {
      try {
        do {
          this.#again = false;
          await this.#reloadOnce();
        } while (this.#again && !this.#closed);
      } finally {
        this.#reloading = undefined;
      }
    })();
    return this.#reloading;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#watcher?.close();
    this.#watcher = undefined;
    if (this.#polling) unwatchFile(this.path, this.#onPoll);
    this.#polling = false;
  }

  #watch(): void {
    const dir = dirname(this.path);
    try {
      this.#watcher = watch(dir, { persistent: false }, () => this.#schedule());
      this.#watcher.on("error", (err) => {
        this.#log.warn({ err }, "directory watch failed, relying on polling");
        this.#watcher?.close();
        this.#watcher = undefined;
      });
    } catch (err) {
      this.#log.warn({ err, dir }, "cannot watch directory, relying on polling");
    }
    if (this.#pollIntervalMs > 0 || !this.#watcher) {
      watchFile(this.path, { persistent: false, interval: this.#pollIntervalMs || 1000 }, this.#onPoll);
      this.#polling = true;
    }
    this.#log.debug({ file: basename(this.path), polling: this.#polling }, "watching pod file");
  }

  readonly #onPoll = (curr: Stats, prev: Stats): void => {
    if (curr.mtimeMs !== prev.mtimeMs || curr.ino !== prev.ino || curr.size !== prev.size) this.#schedule();
  };

  #schedule(): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.reload().catch((err) => this.#log.error({ err }, "pod file reload failed unexpectedly"));
    }, this.#debounceMs);
    this.#timer.unref();
  }

  async #reloadOnce(): Promise<void> {
    let text: string;
    try {
      text = await this.#read();
    } catch (err) {
      this.#lastText = undefined;
      this.#fail(err as AmbitError);
      return;
    }
    if (this.#closed || text === this.#lastText) return;
    this.#lastText = text;
    let result: ReturnType<typeof parsePodFile>;
    try {
      result = parsePodFile(text);
    } catch (err) {
      this.#fail(err as AmbitError);
      return;
    }
    this.#apply(result.state, result.problems, true);
  }

  #apply(state: ClusterState, problems: PodProblem[], emitChange: boolean): void {
    if (problems.length > 0) {
      for (const p of problems) this.#log.warn({ key: p.key, kind: p.kind }, `${p.message}; entry ignored`);
      this.emit("invalid", problems);
    }
    const json = JSON.stringify(state);
    if (json === this.#stateJson) return;
    this.#state = state;
    this.#stateJson = json;
    if (emitChange) {
      this.#log.info({ pods: state.pods.length, namespaces: state.namespaces.length }, "pod file changed");
      this.emit("change", this.current());
    }
  }

  #fail(err: AmbitError): void {
    this.#log.error({ err, code: err.code }, "pod file unusable, keeping the last good state");
    // An 'error' event without a listener would throw and take the agent down; logging is enough then.
    if (this.listenerCount("error") > 0) this.emit("error", err);
  }

  async #read(): Promise<string> {
    try {
      return await readFile(this.path, "utf8");
    } catch (err) {
      throw new PodFileReadError(this.path, err);
    }
  }
}
