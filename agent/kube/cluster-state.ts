import type {
  AuthorizationPolicyRecord,
  EndpointSliceRecord,
  NamespaceRecord,
  PeerAuthenticationRecord,
  PodRecord,
  ServiceRecord,
} from "./records.js";
import { objectKey } from "./records.js";

/**
 * The cluster as a source (the API server, or local manifests) last reported it: one immutable snapshot, replaced
 * whole on every change, so whoever holds one sees a consistent view. Maps are keyed by `namespace/name` (by name
 * for namespaces).
 */
export interface ClusterState {
  namespaces: ReadonlyMap<string, NamespaceRecord>;
  /** Every pod of the cluster (the workload index: IP -> identity). */
  pods: ReadonlyMap<string, PodRecord>;
  /**
   * The pods scheduled on this agent's node, from their own watch (field selector spec.nodeName), which stays
   * small and quick to relist: enrollment reads these. Absent where nobody asked for one node (the CA).
   */
  nodePods?: ReadonlyMap<string, PodRecord>;
  services: ReadonlyMap<string, ServiceRecord>;
  endpointSlices: ReadonlyMap<string, EndpointSliceRecord>;
  peerAuthentications: ReadonlyMap<string, PeerAuthenticationRecord>;
  authorizationPolicies: ReadonlyMap<string, AuthorizationPolicyRecord>;
}

export type ResourceName = Exclude<keyof ClusterState, "nodePods">;

const EMPTY: ClusterState = {
  namespaces: new Map(),
  pods: new Map(),
  services: new Map(),
  endpointSlices: new Map(),
  peerAuthentications: new Map(),
  authorizationPolicies: new Map(),
};

export function emptyClusterState(): ClusterState {
  return EMPTY;
}

export interface ClusterObjects {
  namespaces?: NamespaceRecord[];
  pods?: PodRecord[];
  nodePods?: PodRecord[];
  services?: ServiceRecord[];
  endpointSlices?: EndpointSliceRecord[];
  peerAuthentications?: PeerAuthenticationRecord[];
  authorizationPolicies?: AuthorizationPolicyRecord[];
}

/** A snapshot from lists of records (tests, local sources). */
export function clusterStateOf(objects: ClusterObjects): ClusterState {
  const byKey = <T extends { namespace: string; name: string }>(list: T[] = []) =>
    new Map(list.map((o) => [objectKey(o), o]));
  return {
    namespaces: new Map((objects.namespaces ?? []).map((n) => [n.name, n])),
    pods: byKey(objects.pods),
    ...(objects.nodePods ? { nodePods: byKey(objects.nodePods) } : {}),
    services: byKey(objects.services),
    endpointSlices: byKey(objects.endpointSlices),
    peerAuthentications: byKey(objects.peerAuthentications),
    authorizationPolicies: byKey(objects.authorizationPolicies),
  };
}

/** The pods of `nodeName`: its own watch's view when there is one, else filtered from every pod. */
export function podsOfNode(state: ClusterState, nodeName: string): PodRecord[] {
  if (state.nodePods) return [...state.nodePods.values()].filter((p) => p.nodeName === nodeName);
  return [...state.pods.values()].filter((p) => p.nodeName === nodeName);
}
