import {
  findServed,
  groupVersion,
  RESOURCES,
  type ResourceDef,
  type ServedVersions,
  servedVersions,
} from "./resources.js";

/**
 * Which request path is what: the REST paths of the real API server (`/api/v1/...`, `/apis/GROUP/VERSION/...`,
 * all-namespaces and namespaced collections, single objects), TokenReview, and the discovery documents. Pure.
 */

export type Route =
  | { type: "document"; body: unknown }
  | { type: "text"; body: string }
  | { type: "collection"; def: ResourceDef; version: string; namespace?: string }
  | { type: "object"; def: ResourceDef; version: string; namespace?: string; name: string }
  | { type: "tokenreviews" }
  | { type: "none" };

export const SERVER_VERSION = {
  major: "1",
  minor: "31",
  gitVersion: "v1.31.0+ambit-test",
  gitCommit: "0000000000000000000000000000000000000000",
  gitTreeState: "clean",
  buildDate: "2024-08-13T00:00:00Z",
  goVersion: "go1.22.5",
  compiler: "gc",
  platform: "linux/amd64",
};

const AUTHN_GROUP = "authentication.k8s.io";

function verbs(): string[] {
  return ["create", "delete", "get", "list", "patch", "update", "watch"];
}

function resourceList(group: string, version: string, served: ServedVersions): unknown {
  const resources: unknown[] = RESOURCES.filter(
    (r) => r.group === group && servedVersions(r, served).includes(version),
  ).map((r) => ({
    name: r.plural,
    singularName: r.singular,
    namespaced: r.namespaced,
    kind: r.kind,
    verbs: verbs(),
    ...(r.shortNames ? { shortNames: r.shortNames } : {}),
  }));
  if (group === AUTHN_GROUP) {
    resources.push({
      name: "tokenreviews",
      singularName: "tokenreview",
      namespaced: false,
      kind: "TokenReview",
      verbs: ["create"],
    });
  }
  if (resources.length === 0) return undefined;
  const gv = groupVersion(group, version);
  return group
    ? { kind: "APIResourceList", apiVersion: "v1", groupVersion: gv, resources }
    : { kind: "APIResourceList", groupVersion: gv, resources };
}

function apiGroup(group: string, served: ServedVersions): unknown {
  const versions =
    group === AUTHN_GROUP
      ? ["v1"]
      : [...new Set(RESOURCES.filter((r) => r.group === group).flatMap((r) => servedVersions(r, served)))];
  if (versions.length === 0) return undefined;
  const list = versions.map((version) => ({ groupVersion: `${group}/${version}`, version }));
  return { name: group, versions: list, preferredVersion: list[0] };
}

function groups(): string[] {
  return [...new Set([...RESOURCES.map((r) => r.group).filter((g) => g), AUTHN_GROUP])];
}

function resourcePath(group: string, version: string, rest: string[], served: ServedVersions): Route {
  const find = (plural: string | undefined) => (plural ? findServed(group, version, plural, served) : undefined);
  if (rest.length === 0) {
    const body = resourceList(group, version, served);
    return body ? { type: "document", body } : { type: "none" };
  }
  if (group === AUTHN_GROUP && version === "v1" && rest.length === 1 && rest[0] === "tokenreviews") {
    return { type: "tokenreviews" };
  }
  const [first, second, third, fourth, ...more] = rest;
  if (more.length > 0) return { type: "none" };
  // /namespaces/NS/RESOURCE[/NAME]: namespaced resources only.
  if (first === "namespaces" && third !== undefined && second !== undefined) {
    const def = find(third);
    if (!def?.namespaced) return { type: "none" };
    return fourth === undefined
      ? { type: "collection", def, version, namespace: second }
      : { type: "object", def, version, namespace: second, name: fourth };
  }
  if (third !== undefined) return { type: "none" };
  const def = find(first);
  if (!def) return { type: "none" };
  if (second === undefined) return { type: "collection", def, version };
  return def.namespaced ? { type: "none" } : { type: "object", def, version, name: second };
}

export function route(pathname: string, served: ServedVersions): Route {
  let segments: string[];
  try {
    segments = pathname.split("/").slice(1).map(decodeURIComponent);
  } catch {
    return { type: "none" };
  }
  if (segments.some((s) => s === "")) return { type: "none" };
  const [root, a, b, ...rest] = segments;
  if (segments.length === 1 && (root === "healthz" || root === "livez" || root === "readyz")) {
    return { type: "text", body: "ok" };
  }
  if (segments.length === 1 && root === "version") return { type: "document", body: SERVER_VERSION };
  if (root === "api") {
    if (a === undefined) return { type: "document", body: { kind: "APIVersions", versions: ["v1"] } };
    if (a !== "v1") return { type: "none" };
    return resourcePath("", "v1", b === undefined ? rest : [b, ...rest], served);
  }
  if (root !== "apis") return { type: "none" };
  if (a === undefined) {
    const list = groups()
      .map((g) => apiGroup(g, served))
      .filter((g) => g !== undefined);
    return { type: "document", body: { kind: "APIGroupList", apiVersion: "v1", groups: list } };
  }
  if (b === undefined) {
    const g = apiGroup(a, served);
    return g ? { type: "document", body: { kind: "APIGroup", apiVersion: "v1", ...(g as object) } } : { type: "none" };
  }
  return resourcePath(a, b, rest, served);
}
