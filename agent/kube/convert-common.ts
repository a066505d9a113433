import { isIP } from "node:net";

/**
 * What the converters (convert-*.ts) share: the result type, the object header (kind, name, namespace) and the checks
 * of fields that appear in several kinds. Pure. Input is hostile (a manifest anyone could write, or an API server
 * answer we do not trust blindly): every check bounds sizes, and nothing here throws on odd shapes.
 */

/** A record, or why the object cannot be one: "Kind namespace/name: what is wrong; what else is wrong". */
export type Converted<T> = { record: T } | { problem: string };

/** DNS-1123 subdomain (object names): at most 253 characters. */
const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** DNS-1123 label (namespace names, Service port names): at most 63 characters. */
const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** The name part of a label key, and any non-empty label value: at most 63 characters. */
const QUALIFIED_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
/** metav1.Time is RFC 3339 (seconds in practice; MicroTime adds a fraction). */
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

/** How many offending keys a message lists before it says "and N more" (messages go to logs). */
const LISTED = 5;

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A short description of a value for messages: never the whole value, never more than ~40 characters of it. */
export function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "string") return `string ${quote(v)}`;
  if (typeof v === "number") return `number ${v}`;
  return typeof v;
}

/** A value as a message shows it: a string quoted, anything else described. */
export function shown(v: unknown): string {
  return typeof v === "string" ? quote(v) : describe(v);
}

/** JSON-quoted and cut at 40 characters: names and values in messages may be hostile. */
export function quote(s: string): string {
  return JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s);
}

export function isSubdomain(s: unknown): s is string {
  return typeof s === "string" && s.length <= 253 && SUBDOMAIN.test(s);
}

export function isDnsLabel(s: unknown): s is string {
  return typeof s === "string" && s.length <= 63 && LABEL.test(s);
}

export function isPort(n: unknown): n is number {
  return typeof n === "number" && Number.isInteger(n) && n >= 1 && n <= 65535;
}

/** An IPv4 or IPv6 address as the API writes them: no zone (fe80::1%eth0 is no pod's or Service's address). */
export function ipFamily(s: unknown): 0 | 4 | 6 {
  if (typeof s !== "string" || s.length > 45 || s.includes("%")) return 0;
  return isIP(s) as 0 | 4 | 6;
}

export interface KindSpec {
  kind: string;
  /** The accepted apiVersions. An object without apiVersion/kind is accepted too: List answers leave them out. */
  apiVersions: readonly string[];
  namespaced: boolean;
}

/** The parts every converter starts from; `errors` collects what is wrong, to be reported all at once. */
export interface ObjectHeader {
  object: Record<string, unknown>;
  metadata: Record<string, unknown>;
  name: string;
  /** "" for cluster-scoped kinds. */
  namespace: string;
  errors: string[];
}

/**
 * Checks the type and metadata.name/namespace of `raw`. A problem comes back at once when there is nothing to
 * convert (not an object, another kind); otherwise the header, with any name errors already in `errors`.
 */
export function readHeader(raw: unknown, spec: KindSpec): ObjectHeader | { problem: string } {
  if (!isRecord(raw)) return { problem: `${spec.kind}: must be an object, got ${describe(raw)}` };
  const errors: string[] = [];
  const metadata = isRecord(raw.metadata) ? raw.metadata : {};
  if (!isRecord(raw.metadata)) errors.push(`metadata must be an object, got ${describe(raw.metadata)}`);
  const rawName = metadata.name;
  const rawNamespace = metadata.namespace;
  const name = isSubdomain(rawName) ? rawName : "";
  const namespace = spec.namespaced && isDnsLabel(rawNamespace) ? rawNamespace : "";
  if (!name)
    errors.push(`metadata.name must be a DNS-1123 subdomain (at most 253 characters), got ${describe(rawName)}`);
  if (spec.namespaced && !namespace) {
    errors.push(`metadata.namespace must be a DNS-1123 label (at most 63 characters), got ${describe(rawNamespace)}`);
  }
  const who = `${spec.kind} ${spec.namespaced ? `${namespace || "?"}/` : ""}${name || "?"}`;
  if (raw.kind !== undefined && raw.kind !== spec.kind) {
    return { problem: `${who}: kind is ${shown(raw.kind)}, expected "${spec.kind}"` };
  }
  if (raw.apiVersion !== undefined && !spec.apiVersions.includes(raw.apiVersion as string)) {
    return {
      problem: `${who}: unsupported apiVersion ${shown(raw.apiVersion)} (expected ${spec.apiVersions.join(", ")})`,
    };
  }
  return { object: raw, metadata, name, namespace, errors };
}

/** The result of a conversion: the record when nothing was wrong, else one problem listing every error. */
export function finish<T>(spec: KindSpec, header: ObjectHeader, build: () => T): Converted<T> {
  if (header.errors.length === 0) return { record: build() };
  const who = `${spec.kind} ${spec.namespaced ? `${header.namespace || "?"}/` : ""}${header.name || "?"}`;
  return { problem: `${who}: ${header.errors.join("; ")}` };
}

/** An optional object field: absent or null gives {}; anything else than an object is an error. */
export function optionalObject(v: unknown, field: string, errors: string[]): Record<string, unknown> {
  if (v === undefined || v === null) return {};
  if (isRecord(v)) return v;
  errors.push(`${field} must be an object, got ${describe(v)}`);
  return {};
}

/** An optional array field: absent or null gives []; longer than `max` or not an array is an error. */
export function optionalArray(v: unknown, field: string, max: number, errors: string[]): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) {
    errors.push(`${field} must be an array, got ${describe(v)}`);
    return [];
  }
  if (v.length > max) {
    errors.push(`${field} has ${v.length} entries (at most ${max})`);
    return [];
  }
  return v;
}

/** An optional string field: absent, null or "" gives `fallback`; `valid` says what else is accepted. */
export function optionalString(
  v: unknown,
  field: string,
  fallback: string,
  valid: (s: string) => boolean,
  errors: string[],
  expected: string,
): string {
  if (v === undefined || v === null || v === "") return fallback;
  if (typeof v === "string" && valid(v)) return v;
  errors.push(`${field} must be ${expected}, got ${describe(v)}`);
  return fallback;
}

/** A value of a closed set, `fallback` when absent. */
export function oneOf<T extends string>(
  v: unknown,
  field: string,
  allowed: readonly T[],
  fallback: T,
  errors: string[],
): T {
  if (v === undefined || v === null) return fallback;
  if (allowed.includes(v as T)) return v as T;
  errors.push(`unknown ${field} ${shown(v)} (expected ${allowed.join(", ")})`);
  return fallback;
}

export function isLabelKey(k: string): boolean {
  const slash = k.lastIndexOf("/");
  const prefix = slash >= 0 ? k.slice(0, slash) : undefined;
  const name = slash >= 0 ? k.slice(slash + 1) : k;
  if (prefix !== undefined && !isSubdomain(prefix)) return false;
  return name.length <= 63 && QUALIFIED_NAME.test(name);
}

export function isLabelValue(v: unknown): v is string {
  return typeof v === "string" && (v === "" || (v.length <= 63 && QUALIFIED_NAME.test(v)));
}

/**
 * A label map (metadata.labels, a selector's matchLabels): absent or null gives {}. Keys and values must be what
 * Kubernetes accepts (string values of at most 63 characters, qualified-name keys); the API server enforces that for
 * real objects, so only a hand-written manifest can fail here. Kubernetes puts no limit on how many labels an object
 * has, so neither do we. The copy is built with Object.fromEntries: a "__proto__" key (refused anyway: keys start
 * with an alphanumeric) could never reach an object's prototype.
 */
export function readLabels(v: unknown, field: string, errors: string[]): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (!isRecord(v)) {
    errors.push(`${field} must be an object, got ${describe(v)}`);
    return {};
  }
  const entries = Object.entries(v);
  const badKeys = entries.filter(([k]) => !isLabelKey(k)).map(([k]) => k);
  const badValues = entries.filter(([k, val]) => isLabelKey(k) && !isLabelValue(val));
  if (badKeys.length > 0) errors.push(`${field} has invalid keys ${list(badKeys.map(quote))}`);
  for (const [k, val] of badValues.slice(0, LISTED)) {
    errors.push(
      `${field}[${quote(k)}] must be a label value (a string of at most 63 characters), got ${describe(val)}`,
    );
  }
  if (badValues.length > LISTED) errors.push(`${field} has ${badValues.length - LISTED} more invalid values`);
  return badKeys.length + badValues.length > 0 ? {} : Object.fromEntries(entries as [string, string][]);
}

/** metadata.creationTimestamp and the like: "" when absent, else it must be RFC 3339. */
export function readTimestamp(v: unknown, field: string, errors: string[]): string {
  if (v === undefined || v === null) return "";
  if (typeof v === "string" && RFC3339.test(v) && Number.isFinite(Date.parse(v))) return v;
  errors.push(`${field} must be an RFC 3339 time, got ${describe(v)}`);
  return "";
}

/** At most LISTED items, then "and N more". */
export function list(items: string[]): string {
  const shown = items.slice(0, LISTED).join(", ");
  return items.length > LISTED ? `${shown} and ${items.length - LISTED} more` : shown;
}
