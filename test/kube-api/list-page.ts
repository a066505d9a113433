import type { FieldRequirement, LabelRequirement } from "./selectors.js";
import { matchesFields, matchesLabels } from "./selectors.js";
import { badRequest, continueExpired, expired, type Status, tooLargeResourceVersion } from "./status.js";
import { type ObjectStore, type StoredObject, StoreError } from "./store.js";

/**
 * One list request resolved against the store with the real server's resourceVersion rules (unset: most recent;
 * "0": any; N: not older than N, or exactly N when paginating or asked for `Exact`), limit/continue pagination at
 * a consistent snapshot, and 410 for a continue token whose snapshot was compacted. Pure.
 */

export interface ListQuery {
  namespace?: string;
  labelSelector: readonly LabelRequirement[];
  fieldSelector: readonly FieldRequirement[];
  /** Absent or <= 0: everything. */
  limit?: number;
  continueToken?: string;
  resourceVersion?: string;
  resourceVersionMatch?: string;
}

export type ListPage =
  | { ok: true; rv: number; items: StoredObject[]; continueToken?: string; remainingItemCount?: number }
  | { ok: false; status: Status };

interface ContinueKey {
  v: "meta.k8s.io/v1";
  /** The snapshot's resourceVersion; -1 (an "inconsistent" token handed out with a 410) means the current one. */
  rv: number;
  /** First key of the next page. */
  start: string;
}

const MAX_TOKEN_CHARS = 4096;

export function encodeContinue(rv: number, start: string): string {
  const key: ContinueKey = { v: "meta.k8s.io/v1", rv, start };
  return Buffer.from(JSON.stringify(key)).toString("base64url");
}

export function decodeContinue(token: string): ContinueKey | undefined {
  if (token.length > MAX_TOKEN_CHARS) return undefined;
  try {
    const k = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as Partial<ContinueKey>;
    const ok = k.v === "meta.k8s.io/v1" && Number.isSafeInteger(k.rv) && typeof k.start === "string" && k.start;
    return ok ? (k as ContinueKey) : undefined;
  } catch {
    return undefined;
  }
}

/** A resourceVersion query parameter: "" is unset; anything but a decimal integer is a 400. */
export function parseResourceVersion(raw: string | undefined): number | undefined | Status {
  if (raw === undefined || raw === "") return undefined;
  if (!/^\d{1,15}$/.test(raw)) return badRequest(`invalid resource version "${raw}"`);
  return Number(raw);
}

function isStatus(v: unknown): v is Status {
  return typeof v === "object" && v !== null && (v as Status).kind === "Status";
}

/** Index of the first entry whose key is >= `key`. */
function lowerBound(items: readonly StoredObject[], key: string): number {
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((items[mid] as StoredObject).key < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function snapshot(
  store: ObjectStore,
  resource: string,
  q: ListQuery,
): { rv: number; items: readonly StoredObject[]; start: string } | Status {
  const current = store.resourceVersion;
  const match = q.resourceVersionMatch ?? "";
  const rv = parseResourceVersion(q.resourceVersion);
  if (isStatus(rv)) return rv;
  if (q.continueToken) {
    if (rv !== undefined && rv !== 0)
      return badRequest("specifying resource version is not allowed when using continue");
    if (match) return badRequest("resourceVersionMatch is forbidden when continue is provided");
    const key = decodeContinue(q.continueToken);
    if (!key)
      return badRequest("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)");
    const at = key.rv === -1 ? current : key.rv;
    try {
      return { rv: at, items: store.sortedAt(resource, at), start: key.start };
    } catch (err) {
      if (err instanceof StoreError && err.code === "expired") return continueExpired(encodeContinue(-1, key.start));
      throw err;
    }
  }
  if (match && rv === undefined)
    return badRequest("resourceVersionMatch is forbidden unless resourceVersion is provided");
  if (match && match !== "Exact" && match !== "NotOlderThan") {
    return badRequest(`resourceVersionMatch: Unsupported value: "${match}"`);
  }
  if (rv === undefined || rv === 0) {
    if (match === "Exact") return badRequest('resourceVersionMatch "Exact" is forbidden for resourceVersion "0"');
    return { rv: current, items: store.sorted(resource), start: "" };
  }
  if (rv > current) return tooLargeResourceVersion(rv, current);
  const exact = match === "Exact" || (match === "" && q.limit !== undefined && q.limit > 0);
  if (!exact) return { rv: current, items: store.sorted(resource), start: "" };
  try {
    return { rv, items: store.sortedAt(resource, rv), start: "" };
  } catch (err) {
    if (err instanceof StoreError && err.code === "expired") return expired(err.message);
    throw err;
  }
}

export function listPage(store: ObjectStore, resource: string, q: ListQuery): ListPage {
  const snap = snapshot(store, resource, q);
  if (isStatus(snap)) return { ok: false, status: snap };
  const prefix = q.namespace === undefined ? "" : `${q.namespace}/`;
  const { items: all } = snap;
  const end = prefix ? lowerBound(all, `${q.namespace}0`) : all.length; // "0" is the character after "/"
  const selecting = q.labelSelector.length > 0 || q.fieldSelector.length > 0;
  const limit = q.limit !== undefined && q.limit > 0 ? q.limit : Number.POSITIVE_INFINITY;
  const items: StoredObject[] = [];
  let from = prefix;
  if (snap.start > from) from = snap.start;
  let i = lowerBound(all, from);
  for (; i < end && items.length < limit; i++) {
    const o = all[i] as StoredObject;
    if (!selecting || (matchesLabels(q.labelSelector, o.labels) && matchesFields(q.fieldSelector, o.fields))) {
      items.push(o);
    }
  }
  // Like etcd, "more" means more keys in range, matching or not: a selective list can end on an empty page.
  if (i >= end) return { ok: true, rv: snap.rv, items };
  const last = all[i - 1] as StoredObject;
  const page: ListPage = { ok: true, rv: snap.rv, items, continueToken: encodeContinue(snap.rv, `${last.key}\u0000`) };
  if (!selecting) page.remainingItemCount = end - i;
  return page;
}
