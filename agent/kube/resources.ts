/**
 * The catalogue of what ambit follows: for each resource, where the API server serves it, which manifest kinds
 * carry it, and how a raw object becomes a record. The API source, the manifest source and the store all read it.
 */
import type { ResourceName } from "./cluster-state.js";
import { convertNamespace, convertPod, convertService, mergePodUpdate } from "./convert-core.js";
import { convertEndpointSlice } from "./convert-discovery.js";
import { convertAuthorizationPolicy, convertPeerAuthentication } from "./convert-istio.js";
import type { PodRecord } from "./records.js";

/** What the store holds: every resource of a ClusterState, and this node's pods from their own watch. */
export type StoredResource = ResourceName | "nodePods";

export type Converted = { record: unknown } | { problem: string };

export interface ResourceDef {
  /** apiVersion/kind pairs a manifest may use for it (Istio's objects at v1 and v1beta1). */
  kinds: ReadonlyArray<{ apiVersion: string; kind: string }>;
  /** Collection paths on the API server, most preferred first (a cluster may serve only v1beta1). */
  paths: readonly string[];
  /** Cluster-scoped (Namespaces): keyed by name alone. */
  clusterScoped?: boolean;
  /** Raw object -> record; `previous` is the record in force for the same key, if any. */
  convert(raw: unknown, previous: unknown): Converted;
}

const pod: ResourceDef = {
  kinds: [{ apiVersion: "v1", kind: "Pod" }],
  paths: ["/api/v1/pods"],
  convert: (raw, previous) => {
    const out = convertPod(raw);
    return "record" in out ? { record: mergePodUpdate(previous as PodRecord | undefined, out.record) } : out;
  },
};

export const RESOURCES: Readonly<Record<StoredResource, ResourceDef>> = {
  namespaces: {
    kinds: [{ apiVersion: "v1", kind: "Namespace" }],
    paths: ["/api/v1/namespaces"],
    clusterScoped: true,
    convert: (raw) => convertNamespace(raw),
  },
  pods: pod,
  nodePods: pod,
  services: {
    kinds: [{ apiVersion: "v1", kind: "Service" }],
    paths: ["/api/v1/services"],
    convert: (raw) => convertService(raw),
  },
  endpointSlices: {
    kinds: [{ apiVersion: "discovery.k8s.io/v1", kind: "EndpointSlice" }],
    paths: ["/apis/discovery.k8s.io/v1/endpointslices"],
    convert: (raw) => convertEndpointSlice(raw),
  },
  peerAuthentications: {
    kinds: [
      { apiVersion: "security.istio.io/v1", kind: "PeerAuthentication" },
      { apiVersion: "security.istio.io/v1beta1", kind: "PeerAuthentication" },
    ],
    paths: ["/apis/security.istio.io/v1/peerauthentications", "/apis/security.istio.io/v1beta1/peerauthentications"],
    convert: (raw) => convertPeerAuthentication(raw),
  },
  authorizationPolicies: {
    kinds: [
      { apiVersion: "security.istio.io/v1", kind: "AuthorizationPolicy" },
      { apiVersion: "security.istio.io/v1beta1", kind: "AuthorizationPolicy" },
    ],
    paths: [
      "/apis/security.istio.io/v1/authorizationpolicies",
      "/apis/security.istio.io/v1beta1/authorizationpolicies",
    ],
    convert: (raw) => convertAuthorizationPolicy(raw),
  },
};

/** The resource a manifest object belongs to, by apiVersion and kind (nodePods never come from a manifest). */
export function resourceOfKind(apiVersion: unknown, kind: unknown): ResourceName | undefined {
  for (const [name, def] of Object.entries(RESOURCES)) {
    if (name === "nodePods") continue;
    if (def.kinds.some((k) => k.apiVersion === apiVersion && k.kind === kind)) return name as ResourceName;
  }
  return undefined;
}

/** `namespace/name` (or `name` for cluster-scoped resources) from an object's metadata, undefined if it has none. */
export function metadataKey(raw: unknown, resource: StoredResource): string | undefined {
  const meta = (raw as { metadata?: { name?: unknown; namespace?: unknown } } | null)?.metadata;
  if (typeof meta?.name !== "string" || meta.name === "") return undefined;
  if (RESOURCES[resource].clusterScoped) return meta.name;
  const ns = typeof meta.namespace === "string" && meta.namespace !== "" ? meta.namespace : "default";
  return `${ns}/${meta.name}`;
}
