import { type ClusterState, podsOfNode } from "./cluster-state.js";
import { isMeshEnrolled } from "./mesh-selection.js";
import { objectKey, type PodRecord } from "./records.js";

export interface PodChange {
  previous: PodRecord;
  current: PodRecord;
}

export interface EnrollmentDiff {
  /** Newly meshed pods of this node: install redirection and issue identities. */
  enroll: PodRecord[];
  /** Pods of this node no longer meshed (opted out, deleted, finished, moved away): the previous record. */
  unenroll: PodRecord[];
  /** Still meshed, but a new sandbox (uid, IPs or namespace changed): undo on previous, redo on current. */
  reenroll: PodChange[];
  /** Still meshed, same sandbox, but identity or labels changed: refresh certificates, keep redirection. */
  updated: PodChange[];
}

/**
 * Whether a pod of this node is enrolled now. hostNetwork pods share the node's namespace and are never enrolled. A
 * pod is enrolled as soon as its sandbox has IPs, Pending included: init containers and early app traffic are then
 * already meshed, rather than waiting for Running. Pods without IPs yet wait; finished pods leave.
 */
export function shouldEnroll(pod: PodRecord, state: ClusterState): boolean {
  return pod.ips.length > 0 && isMeshedPod(pod, state);
}

/** Whether a pod is in the mesh, its sandbox's addresses aside: not hostNetwork, not finished, opted in. */
export function isMeshedPod(pod: PodRecord, state: ClusterState): boolean {
  if (pod.hostNetwork) return false;
  if (pod.phase === "Succeeded" || pod.phase === "Failed") return false;
  return isMeshEnrolled(pod, state.namespaces.get(pod.namespace));
}

/**
 * What the agent on `nodeName` must do to go from `prev` to `next`. Pure. Only pods scheduled on this node count;
 * a namespace label change enrolls or unenrolls all its pods.
 */
export function diffEnrollment(prev: ClusterState, next: ClusterState, nodeName: string): EnrollmentDiff {
  const before = enrolledOn(prev, nodeName);
  const after = enrolledOn(next, nodeName);
  const diff: EnrollmentDiff = { enroll: [], unenroll: [], reenroll: [], updated: [] };
  for (const [key, current] of after) {
    const previous = before.get(key);
    if (!previous) diff.enroll.push(current);
    else if (previous.uid !== current.uid || previous.netns !== current.netns || !sameSet(previous.ips, current.ips)) {
      diff.reenroll.push({ previous, current });
    } else if (
      previous.serviceAccount !== current.serviceAccount ||
      previous.workload !== current.workload ||
      !sameLabels(previous.labels, current.labels)
    ) {
      diff.updated.push({ previous, current });
    }
  }
  for (const [key, previous] of before) {
    if (!after.has(key)) diff.unenroll.push(previous);
  }
  return diff;
}

export function isEmptyDiff(diff: EnrollmentDiff): boolean {
  return diff.enroll.length + diff.unenroll.length + diff.reenroll.length + diff.updated.length === 0;
}

/** The pods of `state` that the agent on `nodeName` should have enrolled. */
export function enrolledPods(state: ClusterState, nodeName: string): PodRecord[] {
  return [...enrolledOn(state, nodeName).values()];
}

function enrolledOn(state: ClusterState, nodeName: string): Map<string, PodRecord> {
  const out = new Map<string, PodRecord>();
  for (const pod of podsOfNode(state, nodeName)) if (shouldEnroll(pod, state)) out.set(objectKey(pod), pod);
  return out;
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

function sameLabels(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => b[k] === a[k]);
}
