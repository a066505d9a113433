import type { ClusterState } from "./cluster-state.js";
import {
  compareNames,
  type MtlsMode,
  type MtlsSetting,
  objectKey,
  type PeerAuthenticationRecord,
  selectorMatches,
} from "./records.js";

/**
 * The effective PeerAuthentication mode of a pod's port, with Istio's semantics (pilot/pkg/security/authn
 * ComposePeerAuthentication, which the ambient conversion mirrors). Pure.
 *
 * - Levels, narrowest first: the workload policy (same namespace, every matchLabels entry on the pod), the namespace
 *   policy (same namespace, no selector), the mesh policy (root namespace, no selector), else PERMISSIVE.
 * - A policy with a selector in the root namespace is ignored: it is neither a mesh policy nor a workload policy for
 *   pods of the root namespace or any other (Istio skips it; istio/api documents "PeerAuthentication policies with
 *   workload selectors are ignored when deployed in the root namespace").
 * - Several policies at one level: the oldest wins (creationTimestamp, then name), as Istio does: it sorts configs by
 *   creation time then name then namespace, and keeps the first at each level. An object without a creation time
 *   (a manifest) counts as the oldest, as Go's zero time does.
 * - UNSET (or no mtls) inherits from the next level up. The chosen workload policy's portLevelMtls entry for the port
 *   overrides the result for that port; an UNSET entry inherits the workload's result. portLevelMtls on a policy
 *   without selector is ignored (Istio reads port-level settings from the workload policy only; current CRDs even
 *   refuse such an object: "portLevelMtls requires selector").
 * - The port is the pod's (container) port, not a Service port.
 *
 * Cheap per connection: policies are indexed by namespace once per snapshot, and the policy chain of a pod is memoised
 * by the identity of its labels object (records are immutable; a changed pod is a new record, so a new labels object).
 */

export const DEFAULT_ROOT_NAMESPACE = "istio-system";
const DEFAULT_MODE: MtlsMode = "PERMISSIVE";

/** What decided a mode: the workload policy's portLevelMtls, a policy's mtls at its level, or nothing. */
export type MtlsLevel = "port" | "workload" | "namespace" | "mesh" | "default";

export interface MtlsDecision {
  mode: MtlsMode;
  level: MtlsLevel;
  /** `namespace/name` of the deciding policy; absent for the default. */
  policy?: string;
  /** The policy chosen at each level, whatever it said (UNSET included), for logs and config_dump. */
  applied: { workload?: string; namespace?: string; mesh?: string };
}

/** What resolution reads of a pod. */
export interface PolicyTarget {
  namespace: string;
  labels: Readonly<Record<string, string>>;
}

interface NamespacePolicies {
  /** The oldest namespace-wide policy. */
  wide?: PeerAuthenticationRecord;
  /** Workload policies, oldest first. */
  workload: PeerAuthenticationRecord[];
}

interface Chain {
  workload?: PeerAuthenticationRecord;
  /** The result before port-level settings. */
  base: MtlsDecision;
}

export class PeerAuthenticationResolver {
  readonly rootNamespace: string;
  readonly #mesh: PeerAuthenticationRecord | undefined;
  readonly #byNamespace = new Map<string, NamespacePolicies>();
  readonly #chains = new WeakMap<object, Map<string, Chain>>();

  constructor(policies: Iterable<PeerAuthenticationRecord>, rootNamespace: string = DEFAULT_ROOT_NAMESPACE) {
    this.rootNamespace = rootNamespace;
    const sorted = [...policies].map((p) => ({ p, t: createdMs(p) }));
    sorted.sort((a, b) => a.t - b.t || compareNames(a.p.name, b.p.name) || compareNames(a.p.namespace, b.p.namespace));
    let mesh: PeerAuthenticationRecord | undefined;
    for (const { p } of sorted) {
      if (p.namespace === rootNamespace) {
        if (!p.selector) mesh ??= p;
        continue;
      }
      let entry = this.#byNamespace.get(p.namespace);
      if (!entry) {
        entry = { workload: [] };
        this.#byNamespace.set(p.namespace, entry);
      }
      if (!p.selector) entry.wide ??= p;
      else entry.workload.push(p);
    }
    this.#mesh = mesh;
  }

  /** The effective mode for connections to `port` of `pod`. */
  mode(pod: PolicyTarget, port: number): MtlsMode {
    const chain = this.#chain(pod);
    const own = chain.workload?.portLevelMtls?.[port];
    return own !== undefined && own !== "UNSET" ? own : chain.base.mode;
  }

  /** The mode and what decided it. */
  explain(pod: PolicyTarget, port: number): MtlsDecision {
    const chain = this.#chain(pod);
    const own = chain.workload?.portLevelMtls?.[port];
    if (own === undefined || own === "UNSET" || !chain.workload) return chain.base;
    return { mode: own, level: "port", policy: objectKey(chain.workload), applied: chain.base.applied };
  }

  #chain(pod: PolicyTarget): Chain {
    let byNamespace = this.#chains.get(pod.labels);
    if (!byNamespace) {
      byNamespace = new Map();
      this.#chains.set(pod.labels, byNamespace);
    }
    let chain = byNamespace.get(pod.namespace);
    if (!chain) {
      chain = this.#resolve(pod);
      byNamespace.set(pod.namespace, chain);
    }
    return chain;
  }

  #resolve(pod: PolicyTarget): Chain {
    const own = this.#byNamespace.get(pod.namespace);
    const workload = own?.workload.find((p) => selectorMatches(p.selector, pod.labels));
    const levels: [Exclude<MtlsLevel, "port" | "default">, PeerAuthenticationRecord | undefined][] = [
      ["workload", workload],
      ["namespace", own?.wide],
      ["mesh", this.#mesh],
    ];
    const applied: MtlsDecision["applied"] = {};
    let base: MtlsDecision | undefined;
    for (const [level, policy] of levels) {
      if (!policy) continue;
      applied[level] = objectKey(policy);
      if (!base && isSet(policy.mtls)) base = { mode: policy.mtls, level, policy: objectKey(policy), applied };
    }
    // Frozen: explain() hands the same decision to every caller.
    Object.freeze(applied);
    const decision: MtlsDecision = Object.freeze(base ?? { mode: DEFAULT_MODE, level: "default", applied });
    return workload ? { workload, base: decision } : { base: decision };
  }
}

/**
 * The resolver of a snapshot, built once per set of PeerAuthentications: snapshots that share the same policy map
 * (only pods or Services changed) share the resolver and its memo.
 */
export function peerAuthenticationResolver(
  state: Pick<ClusterState, "peerAuthentications">,
  rootNamespace: string = DEFAULT_ROOT_NAMESPACE,
): PeerAuthenticationResolver {
  let byRoot = resolvers.get(state.peerAuthentications);
  if (!byRoot) {
    byRoot = new Map();
    resolvers.set(state.peerAuthentications, byRoot);
  }
  let resolver = byRoot.get(rootNamespace);
  if (!resolver) {
    resolver = new PeerAuthenticationResolver(state.peerAuthentications.values(), rootNamespace);
    byRoot.set(rootNamespace, resolver);
  }
  return resolver;
}

const resolvers = new WeakMap<object, Map<string, PeerAuthenticationResolver>>();

function isSet(s: MtlsSetting): s is MtlsMode {
  return s !== "UNSET";
}

/** Milliseconds since the epoch; no (or an unreadable) creation time sorts first, like Go's zero time.Time. */
function createdMs(p: PeerAuthenticationRecord): number {
  const t = p.createdAt ? Date.parse(p.createdAt) : Number.NaN;
  return Number.isFinite(t) ? t : Number.NEGATIVE_INFINITY;
}
