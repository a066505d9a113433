/**
 * The records a source (the API server's watches, or local manifests) has delivered so far, and the ClusterState
 * snapshots made from them. Sources feed it raw objects; it converts them (resources.ts), keeps what is valid, and
 * emits one snapshot per burst of changes (a relist of 10,000 pods is one snapshot, not 10,000).
 *
 * Rules every source gets for free:
 * - An invalid object is skipped with a warning naming it, and an invalid UPDATE never replaces the valid version
 *   in force: a typo in a STRICT PeerAuthentication must not loosen it.
 * - A relist (or a manifest reload) swaps the whole set of one resource without flapping: a record that is the same
 *   before and after is kept as is, so nothing downstream sees it leave and come back.
 * - A terminating pod whose status lost its IPs keeps its last known IPs until it is gone.
 */
import { EventEmitter } from "node:events";
import type { Logger } from "../log.js";
import type { ClusterState } from "./cluster-state.js";
import { emptyClusterState } from "./cluster-state.js";
import { metadataKey, RESOURCES, type StoredResource } from "./resources.js";

export interface ClusterStoreEvents {
  change: [state: ClusterState];
}

type RecordMap = Map<string, unknown>;

export class ClusterStore extends EventEmitter<ClusterStoreEvents> {
  readonly #log: Logger;
  readonly #maps = new Map<StoredResource, RecordMap>();
  readonly #dirty = new Set<StoredResource>();
  #snapshot: ClusterState = emptyClusterState();
  #emitted: ClusterState = this.#snapshot;
  #scheduled = false;

  constructor(options: { logger: Logger; resources?: readonly StoredResource[] }) {
    super();
    this.#log = options.logger;
    for (const r of options.resources ?? (Object.keys(RESOURCES) as StoredResource[])) this.#maps.set(r, new Map());
    if (this.#maps.has("nodePods")) this.#snapshot = { ...this.#snapshot, nodePods: new Map() };
    this.#emitted = this.#snapshot;
  }

  /** The latest snapshot (emitted or not yet). */
  snapshot(): ClusterState {
    this.#flush();
    return this.#snapshot;
  }

  /**
   * The snapshot a consumer starts from (a source's start()): `change` then fires only for what comes after it, not
   * for the load that produced it.
   */
  baseline(): ClusterState {
    this.#flush();
    this.#emitted = this.#snapshot;
    return this.#snapshot;
  }

  /** An object was added or modified. */
  upsert(resource: StoredResource, raw: unknown): void {
    const map = this.#map(resource);
    const key = metadataKey(raw, resource);
    const previous = key === undefined ? undefined : map.get(key);
    const next = this.#convert(resource, raw, previous);
    if (next === undefined || key === undefined || same(previous, next)) return;
    map.set(key, next);
    this.#changed(resource);
  }

  /** An object was deleted (its last state, or at least its metadata). */
  remove(resource: StoredResource, raw: unknown): void {
    const key = metadataKey(raw, resource);
    if (key !== undefined && this.#map(resource).delete(key)) this.#changed(resource);
  }

  /** Everything of one resource, as a relist or a reload of the manifests sees it now. */
  replace(resource: StoredResource, raws: readonly unknown[]): void {
    const map = this.#map(resource);
    const next: RecordMap = new Map();
    for (const raw of raws) {
      const key = metadataKey(raw, resource);
      if (key === undefined) {
        this.#log.warn({ resource }, "object without metadata.name skipped");
        continue;
      }
      const previous = map.get(key);
      const record = this.#convert(resource, raw, previous);
      if (record !== undefined) next.set(key, same(previous, record) ? previous : record);
    }
    let changed = next.size !== map.size;
    for (const [key, record] of next) if (map.get(key) !== record) changed = true;
    if (!changed) return;
    map.clear();
    for (const [key, record] of next) map.set(key, record);
    this.#changed(resource);
  }

  #convert(resource: StoredResource, raw: unknown, previous: unknown): unknown {
    const def = RESOURCES[resource];
    const result = def.convert(raw, previous);
    if ("record" in result) return result.record;
    this.#log.warn(
      { resource, problem: result.problem, kept: previous !== undefined },
      previous === undefined
        ? "invalid object skipped; fix it and apply again"
        : "invalid update ignored; the previous valid version stays in force",
    );
    return previous;
  }

  #map(resource: StoredResource): RecordMap {
    const map = this.#maps.get(resource);
    if (!map) throw new Error(`cluster store does not hold ${resource}`);
    return map;
  }

  #changed(resource: StoredResource): void {
    this.#dirty.add(resource);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#flush();
      if (this.#snapshot === this.#emitted) return;
      this.#emitted = this.#snapshot;
      this.emit("change", this.#snapshot);
    });
  }

  /** Folds pending changes into a new snapshot. */
  #flush(): void {
    if (this.#dirty.size === 0) return;
    const next: Record<string, unknown> = { ...this.#snapshot };
    for (const resource of this.#dirty) next[resource] = new Map(this.#map(resource));
    this.#dirty.clear();
    this.#snapshot = next as unknown as ClusterState;
  }
}

function same(a: unknown, b: unknown): boolean {
  return a === b || (a !== undefined && JSON.stringify(a) === JSON.stringify(b));
}
