/**
 * The agent's view of the cluster, as given by a pod source (a local JSON file today, the Kubernetes API later).
 * Only what the data path needs: where a pod's network namespace is, its IPs, its identity and its labels.
 */

export type PeerAuthenticationMode = "PERMISSIVE" | "STRICT" | "DISABLE";

export interface NamespaceSpec {
  name: string;
  labels: Record<string, string>;
  /** Namespace-wide PeerAuthentication mode; pods inherit it unless they set their own. */
  peerAuthentication?: PeerAuthenticationMode;
}

export interface PodSpec {
  name: string;
  namespace: string;
  serviceAccount: string;
  /** Node the pod is scheduled on; the agent only enrolls pods of its own node. */
  nodeName: string;
  labels: Record<string, string>;
  /** Path of the pod's network namespace: /var/run/netns/NAME or /proc/PID/ns/net. */
  netns: string;
  /** Pod IPs, IPv4 and/or IPv6; at least one. */
  ips: string[];
  /** Workload name used in metrics (a Deployment's name); defaults to the pod name. */
  workload?: string;
  peerAuthentication?: PeerAuthenticationMode;
}

export interface ClusterState {
  namespaces: NamespaceSpec[];
  pods: PodSpec[];
}

/** Stable key of a pod across updates. */
export function podKey(pod: Pick<PodSpec, "namespace" | "name">): string {
  return `${pod.namespace}/${pod.name}`;
}

export const MESH_LABEL = "ambit.dev/mesh";
