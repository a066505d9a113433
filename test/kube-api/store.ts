import { randomBytes, randomUUID } from "node:crypto";
import { AmbitError } from "../../agent/errors.js";
import { type KubeObject, type ObjectMeta, RESOURCES, type ResourceDef, selectableFields } from "./resources.js";
import { isLabelValue, isQualifiedName } from "./selectors.js";

/**
 * The test API server's storage, in memory and pure (no I/O, no timers): what etcd plus the watch cache are to the
 * real API server. One resourceVersion counter for every resource (an etcd revision), a bounded event history per
 * resource, compaction, and lists at an exact past resourceVersion (for continue tokens) rebuilt from that history.
 */

export type StoreErrorCode = "not_found" | "already_exists" | "conflict" | "invalid" | "expired";

export class StoreError extends AmbitError {
  declare readonly code: StoreErrorCode;

  constructor(code: StoreErrorCode, message: string) {
    super(code, message);
  }
}

/** One object version. Immutable: the JSON is fixed at write time, selectors read the extracted labels/fields. */
export interface StoredObject {
  /** `namespace/name`, or `name` for cluster-scoped resources; lists are in this key's byte order (as etcd). */
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly rv: number;
  readonly labels: Readonly<Record<string, string>>;
  /** Every field-selector label of the resource with this object's value. */
  readonly fields: Readonly<Record<string, string>>;
  /** The object without kind/apiVersion (added per request: custom resources are served at several versions). */
  readonly json: string;
}

export type EventType = "ADDED" | "MODIFIED" | "DELETED";

export interface StoreEvent {
  readonly type: EventType;
  readonly resource: string;
  readonly rv: number;
  /** The new version; for DELETED the last state carrying the deletion's resourceVersion. */
  readonly object: StoredObject;
  /** The version before this event (MODIFIED, DELETED). */
  readonly prev?: StoredObject;
}

export type StoreListener = (event: StoreEvent) => void;

export interface StoreOptions {
  /** resourceVersion of an empty store; real ones are large, so clients never see small "special" values. */
  initialResourceVersion?: number;
  /** Events kept per resource before the oldest are forgotten (as if compacted); default 20,000. */
  historyLimit?: number;
  now?: () => number;
}

interface Bucket {
  readonly def: ResourceDef;
  readonly readers: Array<[string, (obj: KubeObject) => string]>;
  objects: Map<string, StoredObject>;
  /** Ascending by rv; entries before `head` are forgotten (trimmed lazily so trimming stays amortized O(1)). */
  history: StoreEvent[];
  head: number;
  /** Every event after this resourceVersion is in `history`: watches and exact lists from older ones get 410. */
  oldestRv: number;
  sorted: StoredObject[] | undefined;
}

/** Metadata the server decides, whatever the client sent. */
const SERVER_SET_META = new Set(["namespace", "uid", "resourceVersion", "creationTimestamp"]);

const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
const NAMESPACE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function rfc3339(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(".000Z", "Z");
}

function checkStringMap(
  what: string,
  value: unknown,
  validKey?: (k: string) => boolean,
  validValue?: (v: string) => boolean,
) {
  if (value === undefined) return;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new StoreError("invalid", `metadata.${what} must be a map of strings`);
  }
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== "string") throw new StoreError("invalid", `metadata.${what}[${k}] must be a string`);
    if (validKey && !validKey(k)) throw new StoreError("invalid", `metadata.${what}: invalid key "${k}"`);
    if (validValue && !validValue(v)) throw new StoreError("invalid", `metadata.${what}[${k}]: invalid value "${v}"`);
  }
}

export class ObjectStore {
  #rv: number;
  readonly #historyLimit: number;
  readonly #now: () => number;
  readonly #buckets = new Map<string, Bucket>();
  readonly #listeners = new Set<StoreListener>();
  #stamp = { second: Number.NaN, text: "" };

  constructor(options: StoreOptions = {}) {
    this.#rv = options.initialResourceVersion ?? 1000;
    this.#historyLimit = options.historyLimit ?? 20_000;
    this.#now = options.now ?? Date.now;
    for (const def of RESOURCES) {
      this.#buckets.set(def.plural, {
        def,
        readers: Object.entries(selectableFields(def)),
        objects: new Map(),
        history: [],
        head: 0,
        oldestRv: this.#rv,
        sorted: undefined,
      });
    }
  }

  /** The current resourceVersion: that of the last write to any resource. */
  get resourceVersion(): number {
    return this.#rv;
  }

  /** Every event of every resource, synchronously, after it is stored. */
  subscribe(listener: StoreListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Oldest resourceVersion a watch or exact list of `resource` can start from. */
  oldestResourceVersion(resource: string): number {
    return this.#bucket(resource).oldestRv;
  }

  get(resource: string, namespace: string, name: string): StoredObject | undefined {
    const b = this.#bucket(resource);
    return b.objects.get(this.#key(b, namespace, name));
  }

  /** Creates; `already_exists` if an object of that name is there. Honours metadata.generateName. */
  create(resource: string, obj: KubeObject): StoredObject {
    const b = this.#bucket(resource);
    const meta = { ...obj.metadata };
    if (!meta.name && meta.generateName)
      meta.name = `${meta.generateName}${randomBytes(4).toString("hex").slice(0, 5)}`;
    const key = this.#key(b, meta.namespace ?? "", meta.name);
    if (b.objects.has(key)) throw new StoreError("already_exists", `${b.def.plural} "${meta.name}" already exists`);
    return this.#write(b, { ...obj, metadata: meta }, undefined);
  }

  /**
   * Replaces an existing object; `not_found` if absent, `conflict` if `obj` carries a resourceVersion other than
   * the stored one (an unconditional update leaves it out).
   */
  replace(resource: string, obj: KubeObject): StoredObject {
    const b = this.#bucket(resource);
    const prev = b.objects.get(this.#key(b, obj.metadata?.namespace ?? "", obj.metadata?.name));
    if (!prev) throw new StoreError("not_found", `${b.def.plural} "${obj.metadata?.name}" not found`);
    const wanted = obj.metadata.resourceVersion;
    if (wanted !== undefined && wanted !== "" && wanted !== String(prev.rv)) {
      throw new StoreError(
        "conflict",
        `Operation cannot be fulfilled on ${b.def.plural} "${prev.name}": the object has been modified; please apply your changes to the latest version and try again`,
      );
    }
    return this.#write(b, obj, prev);
  }

  /** Create or replace, unconditionally (what a test means by "the cluster now holds this"). */
  apply(resource: string, obj: KubeObject): StoredObject {
    const b = this.#bucket(resource);
    const prev = b.objects.get(this.#key(b, obj.metadata?.namespace ?? "", obj.metadata?.name));
    return this.#write(b, obj, prev);
  }

  /** Deletes; `not_found` if absent. The DELETED event carries the last state with a new resourceVersion. */
  delete(resource: string, namespace: string, name: string): StoredObject {
    const b = this.#bucket(resource);
    const key = this.#key(b, namespace, name);
    const prev = b.objects.get(key);
    if (!prev) throw new StoreError("not_found", `${b.def.plural} "${name}" not found`);
    const rv = ++this.#rv;
    const last = withResourceVersion(prev, rv);
    b.objects.delete(key);
    b.sorted = undefined;
    this.#record(b, { type: "DELETED", resource: b.def.plural, rv, object: last, prev });
    return last;
  }

  /** Forgets all history up to now: watches and exact lists from any older resourceVersion get 410. */
  compact(): void {
    for (const b of this.#buckets.values()) {
      b.history = [];
      b.head = 0;
      b.oldestRv = this.#rv;
    }
  }

  /**
   * Starts over empty, as an etcd restored with a bumped, compacted revision: the counter jumps ahead by `bump`
   * so no old resourceVersion is ever reused, and every old one is too old (410).
   */
  reset(bump = 1000): void {
    this.#rv += bump;
    for (const b of this.#buckets.values()) {
      b.objects = new Map();
      b.sorted = undefined;
    }
    this.compact();
  }

  /** Current objects in key order. */
  sorted(resource: string): readonly StoredObject[] {
    const b = this.#bucket(resource);
    b.sorted ??= [...b.objects.values()].sort(byKey);
    return b.sorted;
  }

  /**
   * The objects as they were at resourceVersion `rv`, in key order: the current ones with every later event of
   * this resource undone. `expired` if history no longer reaches back that far.
   */
  sortedAt(resource: string, rv: number): readonly StoredObject[] {
    const b = this.#bucket(resource);
    if (rv >= this.#rv) return this.sorted(resource);
    if (rv < b.oldestRv) throw new StoreError("expired", "The resourceVersion for the provided list is too old.");
    let i = b.history.length;
    while (i > b.head && (b.history[i - 1] as StoreEvent).rv > rv) i--;
    if (i === b.history.length) return this.sorted(resource);
    const objects = new Map(b.objects);
    for (let j = b.history.length - 1; j >= i; j--) {
      const e = b.history[j] as StoreEvent;
      if (e.type === "ADDED") objects.delete(e.object.key);
      else objects.set(e.object.key, e.prev as StoredObject);
    }
    return [...objects.values()].sort(byKey);
  }

  /** Events of `resource` after `rv`, oldest first; `expired` when some of them were forgotten. */
  eventsSince(resource: string, rv: number): StoreEvent[] {
    const b = this.#bucket(resource);
    if (rv < b.oldestRv) {
      throw new StoreError("expired", `too old resource version: ${rv} (${b.oldestRv})`);
    }
    let lo = b.head;
    let hi = b.history.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((b.history[mid] as StoreEvent).rv > rv) hi = mid;
      else lo = mid + 1;
    }
    return b.history.slice(lo);
  }

  /** RFC 3339 to the second, formatted once per second (bulk loads write thousands of objects per second). */
  #timestamp(): string {
    const second = Math.floor(this.#now() / 1000);
    if (second !== this.#stamp.second) this.#stamp = { second, text: rfc3339(second * 1000) };
    return this.#stamp.text;
  }

  #bucket(resource: string): Bucket {
    const b = this.#buckets.get(resource);
    if (!b) throw new StoreError("not_found", `no resource ${resource}`);
    return b;
  }

  #key(b: Bucket, namespace: string, name: unknown): string {
    if (typeof name !== "string" || !name) throw new StoreError("invalid", "metadata.name: Required value");
    return b.def.namespaced ? `${namespace}/${name}` : name;
  }

  #write(b: Bucket, input: KubeObject, prev: StoredObject | undefined): StoredObject {
    const given = input.metadata;
    if (typeof given !== "object" || given === null) throw new StoreError("invalid", "metadata: Required value");
    const name = given.name;
    if (typeof name !== "string" || name.length > 253 || !NAME.test(name)) {
      throw new StoreError(
        "invalid",
        `metadata.name: Invalid value: "${name}": must be a lowercase RFC 1123 subdomain`,
      );
    }
    const namespace = b.def.namespaced ? (given.namespace ?? "") : "";
    if (b.def.namespaced && (namespace.length > 63 || !NAMESPACE.test(namespace))) {
      throw new StoreError("invalid", `metadata.namespace: Invalid value: "${namespace}"`);
    }
    checkStringMap("labels", given.labels, isQualifiedName, isLabelValue);
    checkStringMap("annotations", given.annotations);
    const rv = ++this.#rv;
    const prevMeta = prev ? (JSON.parse(prev.json) as KubeObject).metadata : undefined;
    // Built key by key in the real server's field order; no `delete`, which would slow every later stringify.
    const meta: ObjectMeta = { name };
    if (b.def.namespaced) meta.namespace = namespace;
    meta.uid = prevMeta?.uid ?? randomUUID();
    meta.resourceVersion = String(rv);
    meta.creationTimestamp = prevMeta?.creationTimestamp ?? this.#timestamp();
    for (const k in given) {
      if (!Object.hasOwn(meta, k) && !SERVER_SET_META.has(k) && given[k] !== undefined) meta[k] = given[k];
    }
    const obj: KubeObject = { metadata: meta };
    for (const k in input) if (k !== "kind" && k !== "apiVersion" && k !== "metadata") obj[k] = input[k];
    const fields: Record<string, string> = {};
    for (const [label, read] of b.readers) fields[label] = read(obj);
    const stored: StoredObject = {
      key: this.#key(b, namespace, name),
      namespace,
      name,
      rv,
      labels: { ...meta.labels },
      fields,
      json: JSON.stringify(obj),
    };
    b.objects.set(stored.key, stored);
    b.sorted = undefined;
    this.#record(b, { type: prev ? "MODIFIED" : "ADDED", resource: b.def.plural, rv, object: stored, prev });
    return stored;
  }

  #record(b: Bucket, event: StoreEvent): void {
    b.history.push(event);
    if (b.history.length - b.head > this.#historyLimit) {
      b.oldestRv = (b.history[b.head] as StoreEvent).rv;
      b.head++;
      if (b.head > this.#historyLimit) {
        b.history = b.history.slice(b.head);
        b.head = 0;
      }
    }
    for (const listener of this.#listeners) listener(event);
  }
}

function byKey(a: StoredObject, b: StoredObject): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

/** The same object content at another resourceVersion (a DELETED event's object). */
export function withResourceVersion(obj: StoredObject, rv: number): StoredObject {
  const parsed = JSON.parse(obj.json) as KubeObject;
  parsed.metadata.resourceVersion = String(rv);
  return { ...obj, rv, json: JSON.stringify(parsed) };
}

/** The object as JSON text with kind and apiVersion first, as the real server serialises it. */
export function objectJson(obj: StoredObject, kind: string, apiVersion: string): string {
  return `{"kind":${JSON.stringify(kind)},"apiVersion":${JSON.stringify(apiVersion)},${obj.json.slice(1)}`;
}

/** A stored object as a fresh, mutable value for tests. */
export function toObject(obj: StoredObject, kind: string, apiVersion: string): KubeObject {
  return JSON.parse(objectJson(obj, kind, apiVersion)) as KubeObject;
}

/**
 * What one watcher sees of an event, given whether objects match its selectors: an object that starts matching
 * arrives as ADDED, one that stops matching as DELETED (its previous content at the event's resourceVersion),
 * exactly as the real watch cache does.
 */
export function eventForWatcher(
  event: StoreEvent,
  matches: (obj: StoredObject) => boolean,
): { type: EventType; object: StoredObject } | undefined {
  const now = event.type !== "DELETED" && matches(event.object);
  const before = event.type === "DELETED" ? matches(event.object) : event.prev !== undefined && matches(event.prev);
  if (event.type === "DELETED") return before ? { type: "DELETED", object: event.object } : undefined;
  if (now) return { type: before ? "MODIFIED" : "ADDED", object: event.object };
  if (before && event.prev) return { type: "DELETED", object: withResourceVersion(event.prev, event.rv) };
  return undefined;
}
