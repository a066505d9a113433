/**
 * The slim records the agent and the CA keep of the Kubernetes objects they follow: only the fields ambit reads,
 * never whole objects (a 10,000-pod cluster's Pod objects are hundreds of megabytes; these are a few hundred bytes
 * each). The same records come from the API server (list + watch) and from local manifests (the sim, tests), built by
 * the converters in convert-*.ts.
 */

export type MtlsMode = "PERMISSIVE" | "STRICT" | "DISABLE";
/** PeerAuthentication's UNSET: inherit from the next level up (workload -> namespace -> mesh -> PERMISSIVE). */
export type MtlsSetting = MtlsMode | "UNSET";

export interface NamespaceRecord {
  name: string;
  labels: Readonly<Record<string, string>>;
}

export interface PodRecord {
  /** metadata.uid; "" for an object without one (a hand-written manifest). */
  uid: string;
  name: string;
  namespace: string;
  /** spec.serviceAccountName, "default" when absent (as Kubernetes defaults it). */
  serviceAccount: string;
  /** spec.nodeName; "" while unscheduled. */
  nodeName: string;
  labels: Readonly<Record<string, string>>;
  /**
   * status.podIPs (IPv4 and/or IPv6). A terminating pod whose status lost its IPs keeps its last known ones until
   * it is gone: its connections are still being drained.
   */
  ips: readonly string[];
  /** status.phase: Pending, Running, Succeeded, Failed, Unknown. */
  phase: string;
  hostNetwork: boolean;
  /** metadata.deletionTimestamp is set. */
  terminating: boolean;
  /** The workload the pod belongs to, for metrics: its controller's name (a Deployment's for ReplicaSet pods). */
  workload: string;
  /**
   * Path of the pod's network namespace when the object says where it is (the `ambit.dev/netns` annotation: the sim
   * and local mode). On a real node it is absent and the agent finds the namespace itself (/proc).
   */
  netns?: string;
}

export interface ServicePortRecord {
  name: string;
  port: number;
  protocol: string;
  /** A port number or a port name of the pods (resolved per endpoint through the EndpointSlice's ports). */
  targetPort: number | string;
}

export interface ServiceRecord {
  name: string;
  namespace: string;
  /** spec.clusterIPs; empty for headless Services (clusterIP None) and ExternalName ones. */
  clusterIPs: readonly string[];
  ports: readonly ServicePortRecord[];
}

export interface EndpointRecord {
  addresses: readonly string[];
  /** conditions.ready (absent means ready, as the API defines it). */
  ready: boolean;
  nodeName?: string;
  /** targetRef when it is a Pod: "namespace/name". */
  pod?: string;
}

export interface EndpointSliceRecord {
  name: string;
  namespace: string;
  /** The owning Service's name (label kubernetes.io/service-name). */
  service: string;
  addressType: "IPv4" | "IPv6" | "FQDN";
  endpoints: readonly EndpointRecord[];
  /** The ports of the endpoints: `port` is the number on the pod, `name` matches the Service port's name. */
  ports: ReadonlyArray<{ name: string; port: number; protocol: string }>;
}

/** A workload selector: every label must match (an empty one selects every pod of the namespace). */
export type LabelSelector = Readonly<Record<string, string>>;

/** Whether `labels` hold every entry of `selector` (Istio's matchLabels; no selector selects every pod). */
export function selectorMatches(
  selector: LabelSelector | undefined,
  labels: Readonly<Record<string, string>>,
): boolean {
  for (const [k, v] of Object.entries(selector ?? {})) {
    if (!Object.hasOwn(labels, k) || labels[k] !== v) return false;
  }
  return true;
}

/** Code-unit order, as Go's cmp.Compare on (ASCII) names: Istio's tie-break among policies. Not locale-aware. */
export function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface PeerAuthenticationRecord {
  name: string;
  namespace: string;
  /**
   * metadata.creationTimestamp (RFC 3339), for precedence among policies at the same level: the oldest wins, as in
   * Istio. "" for an object without one (a manifest): it counts as the oldest, as Go's zero time does in Istio.
   */
  createdAt: string;
  /** spec.selector.matchLabels; absent: namespace-wide (mesh-wide in the root namespace). */
  selector?: LabelSelector;
  mtls: MtlsSetting;
  /** spec.portLevelMtls (workload policies only): the pod's port -> mode. */
  portLevelMtls?: Readonly<Record<number, MtlsSetting>>;
}

export type PolicyAction = "ALLOW" | "DENY" | "AUDIT" | "CUSTOM";

/**
 * Stored as the API serves it; agent/policy compiles the rules. A spec ambit cannot read is kept, marked `invalid`,
 * so that it tightens instead of vanishing: skipping it would drop a DENY that may be in force.
 */
export interface AuthorizationPolicyRecord {
  name: string;
  namespace: string;
  createdAt: string;
  selector?: LabelSelector;
  /** An action ambit does not know is recorded as DENY, with `invalid` saying so. */
  action: PolicyAction;
  /** spec.rules as given (an array of plain JSON objects); absent: no rules. */
  rules?: readonly unknown[];
  /** spec.targetRef(s) is set: the policy binds to a waypoint or gateway, not to the pods ambit serves. */
  targetRefs?: true;
  /** Why the spec cannot be read (action, selector or rules); the policy then allows nothing and denies all. */
  invalid?: string;
}

export function objectKey(o: { namespace: string; name: string }): string {
  return `${o.namespace}/${o.name}`;
}
