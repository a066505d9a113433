import { formatSpiffeId, identityOfPod, type SpiffeId } from "../identity/spiffe.js";
import { canonicalIp, findNamespace } from "../kube/cluster-lookup.js";
import { isMeshEnrolled } from "../kube/mesh-selection.js";
import { type ClusterState, type PodSpec, podKey } from "../kube/pod.js";

/** A meshed workload as the proxy needs it: who it is and which identity its certificate must carry. */
export interface Workload {
  pod: PodSpec;
  key: string;
  id: SpiffeId;
  spiffe: string;
  workload: string;
}

/**
 * IP -> meshed workload, for every enrolled pod of every node the pod source knows. Outbound traffic to an IP in
 * here goes over HBONE and the peer must prove exactly this identity; traffic to any other IP passes through.
 */
export class WorkloadIndex {
  readonly #byIp = new Map<string, Workload>();

  constructor(state: ClusterState, trustDomain: string) {
    for (const pod of state.pods) {
      if (!isMeshEnrolled(pod, findNamespace(state, pod.namespace))) continue;
      const workload = workloadOf(pod, trustDomain);
      for (const ip of pod.ips) {
        const c = canonicalIp(ip);
        if (c !== undefined) this.#byIp.set(c, workload);
      }
    }
  }

  lookup(ip: string): Workload | undefined {
    const c = canonicalIp(ip);
    return c === undefined ? undefined : this.#byIp.get(c);
  }

  get size(): number {
    return this.#byIp.size;
  }
}

/** The workload record of one pod (an enrolled pod of this node, whether or not the index has caught up yet). */
export function workloadOf(pod: PodSpec, trustDomain: string): Workload {
  const id = identityOfPod(pod, trustDomain);
  return { pod, key: podKey(pod), id, spiffe: formatSpiffeId(id), workload: pod.workload ?? pod.name };
}
