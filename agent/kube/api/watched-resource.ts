/**
 * What a list-watch follows and where it delivers what it learns. The agent's ClusterStore implements WatchSink
 * (structurally: nothing here imports it, so the two can evolve apart).
 */

/** Where a watch delivers what it learns (the agent's ClusterStore implements exactly this). */
export interface WatchSink {
  /** ADDED / MODIFIED. */
  upsert(resource: string, raw: unknown): void;
  /** DELETED. */
  remove(resource: string, raw: unknown): void;
  /** A complete (re)list: swap without flapping. */
  replace(resource: string, raws: readonly unknown[]): void;
}

/** One resource to follow: the store's name for it, collection paths most preferred first, optional selectors. */
export interface WatchedResource {
  /** e.g. "pods", "nodePods", "services", "peerAuthentications". */
  resource: string;
  /** e.g. ["/apis/security.istio.io/v1/peerauthentications", ".../v1beta1/..."]. */
  paths: readonly string[];
  /** e.g. "spec.nodeName=node-a" for nodePods. */
  fieldSelector?: string;
  labelSelector?: string;
  /** Absent from the cluster is normal (Istio CRDs not installed): treat 404 on every path as empty and retry later. */
  optional?: boolean;
}

const ISTIO_SECURITY = ["/apis/security.istio.io/v1", "/apis/security.istio.io/v1beta1"];

/** What `ambit agent` on `nodeName` follows. */
export function agentWatchedResources(nodeName: string): WatchedResource[] {
  return [
    { resource: "pods", paths: ["/api/v1/pods"] },
    { resource: "nodePods", paths: ["/api/v1/pods"], fieldSelector: `spec.nodeName=${nodeName}` },
    { resource: "namespaces", paths: ["/api/v1/namespaces"] },
    { resource: "services", paths: ["/api/v1/services"] },
    { resource: "endpointSlices", paths: ["/apis/discovery.k8s.io/v1/endpointslices"] },
    {
      resource: "peerAuthentications",
      paths: ISTIO_SECURITY.map((gv) => `${gv}/peerauthentications`),
      optional: true,
    },
    {
      resource: "authorizationPolicies",
      paths: ISTIO_SECURITY.map((gv) => `${gv}/authorizationpolicies`),
      optional: true,
    },
  ];
}

/** What `ambit ca` follows: pods only (it authorizes an identity by the pods on the caller's node). */
export function caWatchedResources(): WatchedResource[] {
  return [{ resource: "pods", paths: ["/api/v1/pods"] }];
}
