/**
 * The resources the test API server serves, with the paths, kinds and selectable fields of the real API server.
 * Pure data plus lookups; a new resource is one entry here.
 */

export interface ResourceDef {
  /** "" for the core group (served under /api/v1), else the API group (served under /apis/GROUP/VERSION). */
  group: string;
  /** Versions served from the same storage, preferred first; objects say the version they were asked for. */
  versions: string[];
  /** Plural name used in paths; also the storage bucket's name. */
  plural: string;
  singular: string;
  kind: string;
  namespaced: boolean;
  /**
   * Field-selector labels beyond metadata.name (and metadata.namespace when namespaced), as the real server
   * supports them for this resource; each reads one value from the object (missing -> "").
   */
  fields: Record<string, (obj: KubeObject) => string>;
  shortNames?: string[];
  /** Custom resources keep kind/apiVersion on list items; built-in types do not (their serializer drops them). */
  custom: boolean;
}

/** An object as stored and served: JSON with at least metadata.name. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  [field: string]: unknown;
}

export interface ObjectMeta {
  name: string;
  namespace?: string;
  generateName?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [field: string]: unknown;
}

/** Reads a dotted path as the real field selectors do: strings as they are, booleans and numbers as text. */
function fieldAt(path: string): (obj: KubeObject) => string {
  const parts = path.split(".");
  return (obj) => {
    let v: unknown = obj;
    for (const p of parts) v = typeof v === "object" && v !== null ? (v as Record<string, unknown>)[p] : undefined;
    return typeof v === "string" || typeof v === "number" || typeof v === "boolean" ? String(v) : "";
  };
}

const podFields = [
  "spec.nodeName",
  "spec.restartPolicy",
  "spec.schedulerName",
  "spec.serviceAccountName",
  "spec.hostNetwork",
  "status.phase",
  "status.podIP",
  "status.nominatedNodeName",
];

export const RESOURCES: readonly ResourceDef[] = [
  {
    group: "",
    versions: ["v1"],
    plural: "pods",
    singular: "pod",
    kind: "Pod",
    namespaced: true,
    fields: Object.fromEntries(podFields.map((f) => [f, fieldAt(f)])),
    shortNames: ["po"],
    custom: false,
  },
  {
    group: "",
    versions: ["v1"],
    plural: "namespaces",
    singular: "namespace",
    kind: "Namespace",
    namespaced: false,
    fields: { "status.phase": fieldAt("status.phase") },
    shortNames: ["ns"],
    custom: false,
  },
  {
    group: "",
    versions: ["v1"],
    plural: "services",
    singular: "service",
    kind: "Service",
    namespaced: true,
    fields: {},
    shortNames: ["svc"],
    custom: false,
  },
  {
    group: "discovery.k8s.io",
    versions: ["v1"],
    plural: "endpointslices",
    singular: "endpointslice",
    kind: "EndpointSlice",
    namespaced: true,
    fields: {},
    custom: false,
  },
  {
    group: "security.istio.io",
    versions: ["v1", "v1beta1"],
    plural: "peerauthentications",
    singular: "peerauthentication",
    kind: "PeerAuthentication",
    namespaced: true,
    fields: {},
    shortNames: ["pa"],
    custom: true,
  },
  {
    group: "security.istio.io",
    versions: ["v1", "v1beta1"],
    plural: "authorizationpolicies",
    singular: "authorizationpolicy",
    kind: "AuthorizationPolicy",
    namespaced: true,
    fields: {},
    shortNames: ["ap"],
    custom: true,
  },
];

export function groupVersion(group: string, version: string): string {
  return group ? `${group}/${version}` : version;
}

export function listKind(def: ResourceDef): string {
  return `${def.kind}List`;
}

/** Every field-selector label the resource accepts, with its reader. */
export function selectableFields(def: ResourceDef): Record<string, (obj: KubeObject) => string> {
  const meta: Record<string, (obj: KubeObject) => string> = { "metadata.name": (o) => o.metadata.name };
  if (def.namespaced) meta["metadata.namespace"] = (o) => o.metadata.namespace ?? "";
  return { ...meta, ...def.fields };
}

/** Which versions of each group are served; a group left out is served at all its versions. */
export type ServedVersions = Record<string, string[]>;

export function servedVersions(def: ResourceDef, served: ServedVersions): string[] {
  const allowed = served[def.group];
  return allowed ? def.versions.filter((v) => allowed.includes(v)) : def.versions;
}

/** The resource served at GROUP/VERSION/PLURAL, if any. */
export function findServed(
  group: string,
  version: string,
  plural: string,
  served: ServedVersions,
): ResourceDef | undefined {
  const def = RESOURCES.find((r) => r.group === group && r.plural === plural);
  return def && servedVersions(def, served).includes(version) ? def : undefined;
}

/** A resource by kind ("Pod") or plural ("pods"), for the test-facing methods. */
export function resourceFor(kindOrPlural: string): ResourceDef {
  const def = RESOURCES.find((r) => r.kind === kindOrPlural || r.plural === kindOrPlural);
  if (!def) throw new Error(`the test API server serves no resource "${kindOrPlural}"`);
  return def;
}
