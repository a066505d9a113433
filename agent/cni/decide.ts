/**
 * What the agent does with a CNI request, as plain functions over the cluster's state: whether the sandbox's pod is
 * meshed, and the view of the cluster in which the sandboxes the CNI plugin reported stand in for what the API does
 * not say yet. Pure.
 *
 * At ADD the pod's record exists (the kubelet runs a pod only once the API server placed it here), but its status
 * has no IPs yet: the kubelet reports them after the sandbox is up, which is after ADD returns. So the sandbox's
 * addresses (from prevResult) and namespace path (from the runtime) come with the request and override the record's
 * until the sandbox is deleted; the labels, service account and UID still come from the record. A record the agent
 * has not seen yet (its watch lags the kubelet's) is waited for, a bounded time, by the server.
 */

import type { ClusterState } from "../kube/cluster-state.js";
import { isMeshEnrolled, MESH_LABEL } from "../kube/mesh-selection.js";
import type { PodRecord } from "../kube/records.js";

/** A sandbox the CNI plugin reported, held until its DEL (or its pod's record goes). */
export interface CniSandbox {
  containerId: string;
  netns: string;
  ips: readonly string[];
}

/** How a sandbox's enrollment went, for the CNI plugin's answer. */
export type SandboxEnrollment = { ok: true; certified: boolean } | { ok: false; reason: string };

export type CniDecision =
  /** The pod's record, or its namespace's, is not known yet: wait for the cluster source, then decide again. */
  | { kind: "wait"; missing: "pod" | "namespace" }
  | { kind: "not_meshed"; reason: "labels" | "host_network" | "finished" }
  /** The pod to enroll, with the sandbox's addresses and namespace. */
  | { kind: "enroll"; pod: PodRecord }
  | { kind: "refuse"; code: "no_ips"; message: string };

export function decideSandbox(state: ClusterState, key: string, sandbox: CniSandbox): CniDecision {
  const pod = (state.nodePods ?? state.pods).get(key);
  if (!pod) return { kind: "wait", missing: "pod" };
  if (pod.hostNetwork) return { kind: "not_meshed", reason: "host_network" };
  if (pod.phase === "Succeeded" || pod.phase === "Failed") return { kind: "not_meshed", reason: "finished" };
  const namespace = state.namespaces.get(pod.namespace);
  // A pod's own label decides without its namespace; otherwise the namespace's label must be known to say no.
  if (!namespace && pod.labels[MESH_LABEL] === undefined) return { kind: "wait", missing: "namespace" };
  if (!isMeshEnrolled(pod, namespace)) return { kind: "not_meshed", reason: "labels" };
  const enrolled = withSandbox(pod, sandbox);
  if (enrolled.ips.length === 0) {
    return { kind: "refuse", code: "no_ips", message: "prevResult has no IPs and the pod's record none either" };
  }
  return { kind: "enroll", pod: enrolled };
}

/**
 * The pod as enrolled from its sandbox: the sandbox's namespace path, and its IPs when it reported any (the record's
 * may still be the previous sandbox's).
 */
export function withSandbox(pod: PodRecord, sandbox: CniSandbox): PodRecord {
  return { ...pod, netns: sandbox.netns, ips: sandbox.ips.length > 0 ? [...sandbox.ips] : pod.ips };
}

/** `state` with every reported sandbox standing in for its pod's record (pods without a record are left out). */
export function withSandboxes(state: ClusterState, sandboxes: ReadonlyMap<string, CniSandbox>): ClusterState {
  if (sandboxes.size === 0) return state;
  const patch = (pods: ReadonlyMap<string, PodRecord>) => {
    let out: Map<string, PodRecord> | undefined;
    for (const [key, sandbox] of sandboxes) {
      const pod = pods.get(key);
      if (!pod) continue;
      out ??= new Map(pods);
      out.set(key, withSandbox(pod, sandbox));
    }
    return out ?? pods;
  };
  return {
    ...state,
    pods: patch(state.pods),
    ...(state.nodePods ? { nodePods: patch(state.nodePods) } : {}),
  };
}

/** Sandboxes whose pod has no record any more (deleted): dropped, so a later pod of that name starts clean. */
export function staleSandboxes(state: ClusterState, sandboxes: ReadonlyMap<string, CniSandbox>): string[] {
  const pods = state.nodePods ?? state.pods;
  return [...sandboxes.keys()].filter((key) => !pods.has(key));
}
