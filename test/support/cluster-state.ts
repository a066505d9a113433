import type { ClusterState } from "../../agent/kube/cluster-state.js";
import type { PodRecord } from "../../agent/kube/records.js";

/** `state` with the pod `namespace/name` changed by `change` (in every pod map that has it). */
export function withPod(state: ClusterState, key: string, change: (pod: PodRecord) => PodRecord): ClusterState {
  const edit = (pods: ReadonlyMap<string, PodRecord>) => {
    const pod = pods.get(key);
    if (!pod) return pods;
    const next = new Map(pods);
    next.set(key, change(pod));
    return next;
  };
  return { ...state, pods: edit(state.pods), ...(state.nodePods ? { nodePods: edit(state.nodePods) } : {}) };
}

/** A namespace-wide PeerAuthentication object, as a manifest or the API server would give it. */
export function peerAuthentication(namespace: string, mode: string, name = "default"): Record<string, unknown> {
  return {
    apiVersion: "security.istio.io/v1",
    kind: "PeerAuthentication",
    metadata: { name, namespace },
    spec: { mtls: { mode } },
  };
}
