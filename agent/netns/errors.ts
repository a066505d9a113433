import { AmbitError } from "../errors.js";

/**
 * Why a pod has no network namespace the agent can enroll: the `reason` of ambit_pods_not_enrolled, a closed set.
 * - pod_ip_missing: the pod record lists no IP that could identify a namespace (none yet, or only loopback/link-local);
 * - netns_not_found: no namespace with a process in it holds the pod's IPs (not yet, or no longer), or the record's
 *   path does not exist;
 * - netns_ambiguous: two or more namespaces hold the pod's IPs;
 * - netns_other_pod: only namespaces whose processes belong to other pods (by cgroup) hold them;
 * - netns_unreadable: /proc or the record's path could not be read, or no namespace read holds the pod's IPs while
 *   some could not be read (the pod's may be among them);
 * - netns_host: the record's path names the host's or the agent's own namespace, which is never a pod's.
 */
export type NotEnrolledReason =
  | "pod_ip_missing"
  | "netns_not_found"
  | "netns_ambiguous"
  | "netns_other_pod"
  | "netns_unreadable"
  | "netns_host";

export const NOT_ENROLLED_REASONS: readonly NotEnrolledReason[] = [
  "pod_ip_missing",
  "netns_not_found",
  "netns_ambiguous",
  "netns_other_pod",
  "netns_unreadable",
  "netns_host",
];

/** A pod's namespace could not be resolved; `code` is the reason, `pod` the pod's "namespace/name". */
export class NetnsResolveError extends AmbitError {
  declare readonly code: NotEnrolledReason;
  readonly pod: string;

  constructor(code: NotEnrolledReason, pod: string, message: string, options?: { cause?: unknown }) {
    super(code, `${pod}: ${message}`, options);
    this.pod = pod;
  }
}

/** A held namespace was used after its descriptor was closed (release, or a newer namespace replaced it). */
export class NetnsReleasedError extends AmbitError {
  constructor(description: string) {
    super("netns_released", `${description} was released; its descriptor is closed`);
  }
}
