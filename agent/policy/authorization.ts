/**
 * Which AuthorizationPolicies apply to a workload, and what they decide for one inbound connection, with Istio's
 * semantics at L4. Pure.
 *
 * - Scope: a policy in the root namespace applies mesh-wide (with a selector: to the matching pods of every
 *   namespace); elsewhere to its own namespace's pods (with a selector: those whose labels include every
 *   matchLabels entry). A policy with `targetRef(s)` binds to a waypoint or gateway, never to a pod: ignored here.
 * - Order, as Istio: CUSTOM, then DENY, then ALLOW. A CUSTOM policy asks an external authorizer ambit does not have,
 *   so it denies the pods it selects. Any matching DENY rule denies. If any ALLOW policy selects the pod, the
 *   connection must match one of their rules (an ALLOW policy without rules matches nothing); otherwise it is
 *   allowed. AUDIT only logs in Istio and changes no decision: ignored here (converted with a warning).
 * - Fail safe (rules.ts): an ALLOW rule naming L7 fields never matches, a DENY rule is read without them; a rule or
 *   policy that cannot be read (`broken`, `invalid`) allows nothing and, in a DENY policy, denies everything.
 *
 * Cost per connection grows with the policies that select the pod, not with the cluster's: policies are indexed by
 * namespace once per set of policies, and the list that applies to a pod is memoised by its record (records are
 * immutable; a changed pod is a new record).
 */
import { formatSpiffeId, type SpiffeId } from "../identity/spiffe.js";
import { type AuthorizationPolicyRecord, compareNames, objectKey, selectorMatches } from "../kube/records.js";
import type { Denial } from "../proxy/observer.js";
import { type CompiledRule, type ConnectionAttributes, compileRule, ruleMatches } from "./rules.js";

export type Verdict = "allow" | "deny";

/** Why: a policy's rule matched, none did, or no policy applies. */
export type DecisionReason =
  | "no_policy"
  | "allow_matched"
  | "allow_unmatched"
  | "deny_matched"
  | "custom_unsupported"
  | "invalid_policy";

export interface AuthorizationDecision {
  verdict: Verdict;
  reason: DecisionReason;
  /** `namespace/name` of the deciding policy; absent for no_policy and allow_unmatched. */
  policy?: string;
  /** Index of the matching rule in the policy's spec.rules. */
  rule?: number;
}

/** What selection reads of a pod. */
export interface AuthorizationTarget {
  namespace: string;
  labels: Readonly<Record<string, string>>;
}

/** What deciding reads of a policy; which pods it selects is read from its record (AuthorizationResolver). */
export interface CompiledPolicy {
  key: string;
  action: AuthorizationPolicyRecord["action"];
  rules: readonly CompiledRule[];
  /** Why the whole policy cannot be read (from the converter); absent when it can. */
  invalid?: string;
}

/** The policies that select one pod, by action; AUDIT and waypoint-bound ones are already left out. */
export interface AppliedPolicies {
  custom: readonly CompiledPolicy[];
  deny: readonly CompiledPolicy[];
  allow: readonly CompiledPolicy[];
}

/** Every policy that selects the pod, in the order they are weighed: CUSTOM, DENY, ALLOW. */
export function weighed(applied: AppliedPolicies): CompiledPolicy[] {
  return [...applied.custom, ...applied.deny, ...applied.allow];
}

const SPIFFE_SCHEME = "spiffe://";
const NONE: AppliedPolicies = Object.freeze({ custom: [], deny: [], allow: [] });
const ALLOWED_NO_POLICY: AuthorizationDecision = Object.freeze({ verdict: "allow", reason: "no_policy" });
const DENIED_UNMATCHED: AuthorizationDecision = Object.freeze({ verdict: "deny", reason: "allow_unmatched" });

/** Compiled once per record (records are immutable: a changed policy is a new record, compiled afresh). */
export function compilePolicy(record: AuthorizationPolicyRecord): CompiledPolicy {
  let policy = compiled.get(record);
  if (!policy) {
    policy = compile(record);
    compiled.set(record, policy);
  }
  return policy;
}

const compiled = new WeakMap<AuthorizationPolicyRecord, CompiledPolicy>();

function compile(record: AuthorizationPolicyRecord): CompiledPolicy {
  const policy: CompiledPolicy = {
    key: objectKey(record),
    action: record.action,
    rules: (record.rules ?? []).map(compileRule),
  };
  if (record.invalid) policy.invalid = record.invalid;
  return policy;
}

export class AuthorizationResolver {
  readonly rootNamespace: string;
  /** Records, not compiled policies: a policy is compiled when it first selects a pod, so 10,000 policies that
   * select nothing here cost an index entry each, not a compilation. Stable order: namespace, then name. */
  readonly #mesh: AuthorizationPolicyRecord[] = [];
  readonly #byNamespace = new Map<string, AuthorizationPolicyRecord[]>();
  readonly #applied = new WeakMap<object, AppliedPolicies>();

  constructor(records: Iterable<AuthorizationPolicyRecord>, rootNamespace: string) {
    this.rootNamespace = rootNamespace;
    const enforced = [...records].filter((r) => !r.targetRefs && r.action !== "AUDIT");
    enforced.sort((a, b) => compareNames(a.namespace, b.namespace) || compareNames(a.name, b.name));
    for (const p of enforced) {
      if (p.namespace === rootNamespace) {
        this.#mesh.push(p);
        continue;
      }
      let list = this.#byNamespace.get(p.namespace);
      if (!list) {
        list = [];
        this.#byNamespace.set(p.namespace, list);
      }
      list.push(p);
    }
  }

  /** The policies that select `pod`; memoised per pod record (the object passed in). */
  applied(pod: AuthorizationTarget): AppliedPolicies {
    const hit = this.#applied.get(pod);
    if (hit) return hit;
    const selected = [...this.#mesh, ...(this.#byNamespace.get(pod.namespace) ?? [])]
      .filter((p) => selectorMatches(p.selector, pod.labels))
      .map(compilePolicy);
    const applied: AppliedPolicies =
      selected.length === 0
        ? NONE
        : Object.freeze({
            custom: selected.filter((p) => p.action === "CUSTOM"),
            deny: selected.filter((p) => p.action === "DENY"),
            allow: selected.filter((p) => p.action === "ALLOW"),
          });
    this.#applied.set(pod, applied);
    return applied;
  }

  decide(pod: AuthorizationTarget, connection: ConnectionAttributes): AuthorizationDecision {
    return decide(this.applied(pod), connection);
  }
}

/** Istio's order over the policies that select a pod. */
function decide(applied: AppliedPolicies, c: ConnectionAttributes): AuthorizationDecision {
  const first = applied.custom[0];
  if (first) return { verdict: "deny", reason: "custom_unsupported", policy: first.key };
  for (const p of applied.deny) {
    if (p.invalid !== undefined) return { verdict: "deny", reason: "invalid_policy", policy: p.key };
    for (const [i, rule] of p.rules.entries()) {
      if (rule.broken !== undefined) return { verdict: "deny", reason: "invalid_policy", policy: p.key, rule: i };
      if (ruleMatches(rule, c)) return { verdict: "deny", reason: "deny_matched", policy: p.key, rule: i };
    }
  }
  if (applied.allow.length === 0) return ALLOWED_NO_POLICY;
  for (const p of applied.allow) {
    if (p.invalid !== undefined) continue;
    for (const [i, rule] of p.rules.entries()) {
      if (rule.broken !== undefined || rule.l7.length > 0) continue;
      if (ruleMatches(rule, c)) return { verdict: "allow", reason: "allow_matched", policy: p.key, rule: i };
    }
  }
  return DENIED_UNMATCHED;
}

/**
 * The resolver of a set of policies, built once per set: snapshots that share the same policy map (only pods or
 * Services changed) share it and its memo.
 */
export function authorizationResolver(
  policies: ReadonlyMap<string, AuthorizationPolicyRecord>,
  rootNamespace: string,
): AuthorizationResolver {
  let byRoot = resolvers.get(policies);
  if (!byRoot) {
    byRoot = new Map();
    resolvers.set(policies, byRoot);
  }
  let resolver = byRoot.get(rootNamespace);
  if (!resolver) {
    resolver = new AuthorizationResolver(policies.values(), rootNamespace);
    byRoot.set(rootNamespace, resolver);
  }
  return resolver;
}

const resolvers = new WeakMap<object, Map<string, AuthorizationResolver>>();

/** A denial as metrics and logs name it: the deciding policy, or the reason when no single policy decided. */
export function denialOf(decision: AuthorizationDecision): Denial {
  const denial: Denial = { policy: decision.policy ?? decision.reason, reason: decision.reason };
  if (decision.rule !== undefined) denial.rule = decision.rule;
  return denial;
}

/** The attributes of a connection from a verified peer (`id`) or from plaintext (undefined). */
export function connectionAttributes(
  id: SpiffeId | undefined,
  sourceIp: string,
  destinationIp: string,
  destinationPort: number,
): ConnectionAttributes {
  return {
    // Istio writes principals as the SPIFFE ID without its scheme.
    principal: id ? formatSpiffeId(id).slice(SPIFFE_SCHEME.length) : "",
    namespace: id?.namespace ?? "",
    sourceIp,
    destinationIp,
    destinationPort,
  };
}
