import { formatSpiffeId, identityOfPod, type SpiffeId } from "../identity/spiffe.js";
import type { ClusterState } from "../kube/cluster-state.js";
import { canonicalIp } from "../kube/ip.js";
import { isMeshEnrolled } from "../kube/mesh-selection.js";
import { objectKey, type PodRecord } from "../kube/records.js";
import type { HeldNetnsRef } from "../pod-netns.js";

/** A meshed workload as the proxy needs it: who it is and which identity its certificate must carry. */
export interface Workload {
  pod: PodRecord;
  key: string;
  id: SpiffeId;
  spiffe: string;
  workload: string;
}

/** An enrolled pod of this node: a workload whose network namespace the agent holds, to open its sockets there. */
export interface LocalWorkload extends Workload {
  netns: HeldNetnsRef;
}

/**
 * IP -> meshed workload, for every meshed pod of the cluster. Outbound traffic to an IP in here goes over HBONE and
 * the peer must prove exactly this identity; traffic to any other IP passes through (or is a Service: see
 * ServiceIndex). A pod on the host's network shares the node's IP and is never a mesh destination.
 */
export class WorkloadIndex {
  readonly #byIp = new Map<string, Workload>();

  /**
   * Rebuilt on every change of pods or namespaces. A snapshot keeps unchanged pod records as the same objects, so
   * their workloads (identity parsed and validated) are reused: with 10,000 pods a rebuild is map inserts only.
   */
  constructor(state: ClusterState, trustDomain: string) {
    for (const pod of state.pods.values()) {
      if (pod.hostNetwork || pod.ips.length === 0) continue;
      if (!isMeshEnrolled(pod, state.namespaces.get(pod.namespace))) continue;
      const workload = cachedWorkload(pod, trustDomain);
      if (!workload) continue;
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

const workloads = new WeakMap<PodRecord, { trustDomain: string; workload: Workload | undefined }>();

function cachedWorkload(pod: PodRecord, trustDomain: string): Workload | undefined {
  const hit = workloads.get(pod);
  if (hit?.trustDomain === trustDomain) return hit.workload;
  const workload = workloadOf(pod, trustDomain);
  workloads.set(pod, { trustDomain, workload });
  return workload;
}

/** The workload record of one pod, or undefined when its identity cannot be formed (then it is never meshed). */
export function workloadOf(pod: PodRecord, trustDomain: string): Workload | undefined {
  let id: SpiffeId;
  try {
    id = identityOfPod(pod, trustDomain);
  } catch {
    return undefined;
  }
  return { pod, key: objectKey(pod), id, spiffe: formatSpiffeId(id), workload: pod.workload };
}
