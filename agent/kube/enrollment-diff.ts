import { findNamespace } from "./cluster-lookup.js";
import { isMeshEnrolled, peerAuthenticationMode } from "./mesh-selection.js";
import { type ClusterState, type PodSpec, podKey } from "./pod.js";

export interface PodChange {
  previous: PodSpec;
  current: PodSpec;
}

export interface EnrollmentDiff {
  /** Newly meshed pods of this node: install redirection and issue identities. */
  enroll: PodSpec[];
  /** Pods of this node no longer meshed (opted out, deleted, moved away): the previous spec, to find what to undo. */
  unenroll: PodSpec[];
  /** Still meshed but their netns or IPs changed (pod recreated under the same name): undo on previous, redo on current. */
  reenroll: PodChange[];
  /** Still meshed, same netns and IPs, but identity or policy inputs changed (service account, labels, workload,
   * effective PeerAuthentication mode): refresh certificates/policy, keep redirection. */
  updated: PodChange[];
}

/**
 * What the agent on `nodeName` must do to go from `prev` to `next`. Pure. Only pods scheduled on this node count,
 * enrollment per isMeshEnrolled (a namespace label change enrolls or unenrolls all its pods).
 */
export function diffEnrollment(prev: ClusterState, next: ClusterState, nodeName: string): EnrollmentDiff {
  const before = enrolledOn(prev, nodeName);
  const after = enrolledOn(next, nodeName);
  const diff: EnrollmentDiff = { enroll: [], unenroll: [], reenroll: [], updated: [] };
  for (const [key, current] of after) {
    const previous = before.get(key);
    if (!previous) diff.enroll.push(current.pod);
    else if (previous.pod.netns !== current.pod.netns || !sameIps(previous.pod.ips, current.pod.ips)) {
      diff.reenroll.push({ previous: previous.pod, current: current.pod });
    } else if (
      previous.pod.serviceAccount !== current.pod.serviceAccount ||
      previous.mode !== current.mode ||
      (previous.pod.workload ?? previous.pod.name) !== (current.pod.workload ?? current.pod.name) ||
      !sameLabels(previous.pod.labels, current.pod.labels)
    ) {
      diff.updated.push({ previous: previous.pod, current: current.pod });
    }
  }
  for (const [key, previous] of before) {
    if (!after.has(key)) diff.unenroll.push(previous.pod);
  }
  return diff;
}

/** True when the diff asks for nothing. */
export function isEmptyDiff(diff: EnrollmentDiff): boolean {
  return diff.enroll.length + diff.unenroll.length + diff.reenroll.length + diff.updated.length === 0;
}

/** The pods of `state` that the agent on `nodeName` should have enrolled. */
export function enrolledPods(state: ClusterState, nodeName: string): PodSpec[] {
  return [...enrolledOn(state, nodeName).values()].map((e) => e.pod);
}

function enrolledOn(state: ClusterState, nodeName: string): Map<string, { pod: PodSpec; mode: string }> {
  const out = new Map<string, { pod: PodSpec; mode: string }>();
  for (const pod of state.pods) {
    if (pod.nodeName !== nodeName) continue;
    const ns = findNamespace(state, pod.namespace);
    if (isMeshEnrolled(pod, ns)) out.set(podKey(pod), { pod, mode: peerAuthenticationMode(pod, ns) });
  }
  return out;
}

function sameIps(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  const sa = [...a].sort();
  const sb = [...b].sort();
  return sa.every((ip, i) => ip === sb[i]);
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => b[k] === a[k]);
}
