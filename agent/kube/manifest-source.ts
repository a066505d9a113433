/**
 * The cluster as a directory (or one file) of ordinary Kubernetes manifests says it is: YAML or JSON, several
 * documents per file, `kind: List` too, the same objects the API server serves (Pods with status.podIPs,
 * Namespaces, Services, EndpointSlices, PeerAuthentications, ...). Followed live: local mode, the simulator and
 * `make demo` describe their clusters this way.
 *
 * The directory is watched rather than its files: producers (editors, ConfigMap volumes, our own writers) replace
 * files by rename, which a watch on the old inode would miss. Any event triggers a debounced reload of everything;
 * a file that does not parse keeps the objects it had (the rest is reloaded), and the store drops whatever did not
 * change, so `change` fires only when the cluster did.
 */
import { EventEmitter } from "node:events";
import { type FSWatcher, type Stats, statSync, unwatchFile, watch, watchFile } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import { dirname, extname, join, resolve } from "node:path";
import { parseAllDocuments } from "yaml";
import { AmbitError } from "../errors.js";
import { type Logger, silentLogger } from "../log.js";
import type { ClusterState } from "./cluster-state.js";
import { ClusterStore } from "./cluster-store.js";
import { byResource } from "./objects-state.js";
import { RESOURCES, type StoredResource } from "./resources.js";
import type { ClusterSource, SourceEvents, SourceHealth } from "./source.js";

const MANIFEST_EXTENSIONS = new Set([".yaml", ".yml", ".json"]);
/** A manifest larger than this is refused whole (a cluster's worth of pods fits in a few MiB). */
const MAX_FILE_BYTES = 64 * 1024 * 1024;

export class ManifestReadError extends AmbitError {
  constructor(path: string, cause: unknown) {
    super("manifests_unreadable", `cannot read manifests at ${path}: ${(cause as Error)?.message ?? cause}`, { cause });
  }
}

export interface ManifestSourceOptions {
  /** A directory of manifests, or one manifest file. */
  path: string;
  /** Fill ClusterState.nodePods with the pods of this node (what an agent's field-selector watch would give). */
  nodeName?: string;
  debounceMs?: number;
  /** stat() polling as a fallback where directory events are lost (NFS, some overlays); 0 disables. */
  pollIntervalMs?: number;
  logger?: Logger;
}

export class ManifestSource extends EventEmitter<SourceEvents> implements ClusterSource {
  readonly path: string;
  readonly #opts: ManifestSourceOptions;
  readonly #log: Logger;
  readonly #store: ClusterStore;
  /** Objects of every file as last parsed successfully. */
  readonly #files = new Map<string, unknown[]>();
  #problem: string | undefined;
  #watcher: FSWatcher | undefined;
  #polled: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #reloading: Promise<void> | undefined;
  #again = false;
  #closed = false;

  constructor(options: ManifestSourceOptions) {
    super();
    this.path = resolve(options.path);
    this.#opts = options;
    this.#log = (options.logger ?? silentLogger).child({ component: "manifest-source", path: this.path });
    const resources = Object.keys(RESOURCES).filter((r) => r !== "nodePods" || options.nodeName) as StoredResource[];
    this.#store = new ClusterStore({ logger: this.#log, resources });
    this.#store.on("change", (state) => this.emit("change", state));
  }

  /** Reads the manifests once and starts following them; rejects if there is nothing readable to start from. */
  async start(): Promise<ClusterState> {
    await this.#reloadOnce(true);
    this.#watch();
    const state = this.#store.baseline();
    this.#log.info({ pods: state.pods.size, services: state.services.size }, "manifests loaded");
    return state;
  }

  current(): ClusterState {
    return this.#store.snapshot();
  }

  health(): SourceHealth {
    return this.#problem ? { ok: false, reasons: [this.#problem] } : { ok: true, reasons: [] };
  }

  /** Re-reads now (also what file events trigger); resolves once the state is up to date. */
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
          await this.#reloadOnce(false).catch((err: AmbitError) => this.#fail(err));
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
    if (this.#polled) unwatchFile(this.#polled, this.#onPoll);
  }

  async #reloadOnce(first: boolean): Promise<void> {
    const files = await this.#list().catch((err) => {
      throw new ManifestReadError(this.path, err);
    });
    const seen = new Set(files);
    for (const file of [...this.#files.keys()]) if (!seen.has(file)) this.#files.delete(file);
    const problems: string[] = [];
    for (const file of files) {
      try {
        this.#files.set(file, await parseManifestFile(file));
      } catch (err) {
        const kept = this.#files.has(file);
        problems.push(`${file}: ${(err as Error).message}`);
        this.#log.warn(
          { file, err, kept },
          kept ? "manifest file unusable; its previous objects stay" : "manifest file unusable; skipped",
        );
        if (first && !kept) this.#files.set(file, []);
      }
    }
    this.#problem = problems.length > 0 ? `unusable manifests: ${problems.join("; ")}` : undefined;
    this.#replaceAll();
  }

  #replaceAll(): void {
    const objects = [...this.#files.values()].flat();
    for (const [resource, raws] of byResource(objects, this.#opts.nodeName)) this.#store.replace(resource, raws);
  }

  async #list(): Promise<string[]> {
    const info = await stat(this.path);
    if (!info.isDirectory()) return [this.path];
    const names = (await readdir(this.path)).filter((n) => MANIFEST_EXTENSIONS.has(extname(n)) && !n.startsWith("."));
    const files: string[] = [];
    for (const name of names.sort()) {
      const file = join(this.path, name);
      // Symlinks (ConfigMap volumes) are followed; directories and vanished entries are not manifests.
      if ((await stat(file).catch(() => undefined))?.isFile()) files.push(file);
    }
    return files;
  }

  #watch(): void {
    const dir = statSync(this.path).isDirectory() ? this.path : dirname(this.path);
    try {
      this.#watcher = watch(dir, { persistent: false }, () => this.#schedule());
      this.#watcher.on("error", (err) => {
        this.#log.warn({ err }, "directory watch failed, relying on polling");
        this.#watcher?.close();
        this.#watcher = undefined;
      });
    } catch (err) {
      this.#log.warn({ err, dir }, "cannot watch the manifests' directory, relying on polling");
    }
    const interval = this.#opts.pollIntervalMs ?? 1000;
    if (interval > 0 || !this.#watcher) {
      this.#polled = dir;
      watchFile(dir, { persistent: false, interval: interval || 1000 }, this.#onPoll);
    }
  }

  readonly #onPoll = (curr: Stats, prev: Stats): void => {
    if (curr.mtimeMs !== prev.mtimeMs || curr.ino !== prev.ino) this.#schedule();
  };

  #schedule(): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.reload(), this.#opts.debounceMs ?? 50);
    this.#timer.unref();
  }

  #fail(err: AmbitError): void {
    this.#problem = err.message;
    this.#log.error({ err, code: err.code }, "manifests unreadable; keeping the last good state");
  }
}

/** Every object of one manifest file (documents, and the items of `kind: List`). */
export async function parseManifestFile(file: string): Promise<unknown[]> {
  const info = await stat(file);
  if (info.size > MAX_FILE_BYTES) throw new Error(`larger than ${MAX_FILE_BYTES} bytes`);
  return parseManifests(await readFile(file, "utf8"));
}

/** Objects of a YAML (or JSON, a subset of YAML) text of one or more documents. */
export function parseManifests(text: string): unknown[] {
  const objects: unknown[] = [];
  // YAML 1.1, as kubectl reads manifests (sigs.k8s.io/yaml): `0440` is octal there.
  for (const doc of parseAllDocuments(text, { version: "1.1", prettyErrors: true })) {
    if (doc.errors.length > 0) throw new Error(doc.errors[0]?.message ?? "YAML error");
    const value = doc.toJS({ maxAliasCount: 100 }) as unknown;
    if (value === null || value === undefined) continue;
    const list = value as { kind?: unknown; items?: unknown };
    if (typeof list.kind === "string" && list.kind.endsWith("List") && Array.isArray(list.items)) {
      objects.push(...list.items);
    } else objects.push(value);
  }
  return objects;
}
