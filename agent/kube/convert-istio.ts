import {
  type Converted,
  describe,
  finish,
  isRecord,
  type KindSpec,
  oneOf,
  optionalObject,
  quote,
  readHeader,
  readLabels,
  readTimestamp,
} from "./convert-common.js";
import type {
  AuthorizationPolicyRecord,
  LabelSelector,
  MtlsSetting,
  PeerAuthenticationRecord,
  PolicyAction,
} from "./records.js";

/**
 * security.istio.io PeerAuthentication and AuthorizationPolicy (v1 and v1beta1, the same schema) to records. Pure.
 * A problem means the caller skips the object with a warning; resolution (peer-authentication.ts) never sees it.
 */

const API_VERSIONS = ["security.istio.io/v1", "security.istio.io/v1beta1"];
const PEER_AUTHENTICATION: KindSpec = { kind: "PeerAuthentication", apiVersions: API_VERSIONS, namespaced: true };
const AUTHORIZATION_POLICY: KindSpec = { kind: "AuthorizationPolicy", apiVersions: API_VERSIONS, namespaced: true };

const MTLS_SETTINGS: readonly MtlsSetting[] = ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];
const ACTIONS: readonly PolicyAction[] = ["ALLOW", "DENY", "AUDIT", "CUSTOM"];
/** Far above any real policy (one entry per port of a workload); keeps a hostile one small. */
const MAX_PORT_LEVEL_MTLS = 1024;
const MAX_RULES = 1024;

export function convertPeerAuthentication(raw: unknown): Converted<PeerAuthenticationRecord> {
  const h = readHeader(raw, PEER_AUTHENTICATION);
  if ("problem" in h) return h;
  const { errors } = h;
  const createdAt = readTimestamp(h.metadata.creationTimestamp, "metadata.creationTimestamp", errors);
  const spec = optionalObject(h.object.spec, "spec", errors);
  const selector = readSelector(spec.selector, errors);
  const mtls = mtlsSetting(spec.mtls, "mtls", errors);
  const portLevelMtls = readPortLevelMtls(spec.portLevelMtls, errors);
  return finish(PEER_AUTHENTICATION, h, () => {
    const record: PeerAuthenticationRecord = { name: h.name, namespace: h.namespace, createdAt, mtls };
    if (selector) record.selector = selector;
    if (portLevelMtls) record.portLevelMtls = portLevelMtls;
    return record;
  });
}

/**
 * Only the object's header and spec being an object can make it unusable (skipped with a warning). What is wrong
 * inside the spec (action, selector, rules) is kept as `invalid`: the policy then tightens (agent/policy), since
 * skipping it could drop a DENY in force. An unknown action is recorded as DENY; an unreadable selector leaves the
 * policy namespace-wide (mesh-wide in the root namespace), the widest it could have meant.
 */
export function convertAuthorizationPolicy(raw: unknown): Converted<AuthorizationPolicyRecord> {
  const h = readHeader(raw, AUTHORIZATION_POLICY);
  if ("problem" in h) return h;
  const createdAt = readTimestamp(h.metadata.creationTimestamp, "metadata.creationTimestamp", h.errors);
  const spec = optionalObject(h.object.spec, "spec", h.errors);
  const problems: string[] = [];
  const readable = readSelector(spec.selector, problems);
  const selector = problems.length === 0 ? readable : undefined;
  const action = oneOf(spec.action, "action", ACTIONS, "ALLOW", problems);
  const unknownAction =
    problems.length > 0 && spec.action !== undefined && !ACTIONS.includes(spec.action as PolicyAction);
  const rules = readRules(spec.rules, problems);
  return finish(AUTHORIZATION_POLICY, h, () => {
    const record: AuthorizationPolicyRecord = {
      name: h.name,
      namespace: h.namespace,
      createdAt,
      action: unknownAction ? "DENY" : action,
    };
    if (selector) record.selector = selector;
    if (rules) record.rules = rules;
    if (spec.targetRef != null || spec.targetRefs != null) record.targetRefs = true;
    if (problems.length > 0) record.invalid = problems.join("; ");
    return record;
  });
}

/**
 * spec.selector.matchLabels, or undefined for a policy without a workload selector. A selector without matchLabels,
 * or with an empty matchLabels, counts as none: Istio tests `selector == nil || len(selector.matchLabels) == 0` to
 * tell namespace/mesh-wide policies from workload ones (pilot/pkg/security/authn ComposePeerAuthentication, and the
 * ambient conversion alike), so `selector: {}` makes a namespace-wide policy, not one that selects nothing.
 * Keys and values must be label syntax, which also rules out the wildcards Istio's validation refuses.
 */
function readSelector(v: unknown, errors: string[]): LabelSelector | undefined {
  const selector = optionalObject(v, "selector", errors);
  const labels = readLabels(selector.matchLabels, "selector.matchLabels", errors);
  return Object.keys(labels).length > 0 ? labels : undefined;
}

/** `{mode}`: absent mtls, absent mode and null both mean UNSET (inherit). */
function mtlsSetting(v: unknown, field: string, errors: string[]): MtlsSetting {
  const mtls = optionalObject(v, field, errors);
  return oneOf(mtls.mode, `${field}.mode`, MTLS_SETTINGS, "UNSET", errors);
}

/** spec.portLevelMtls: port -> {mode}. Keys are strings in JSON and YAML ("8080"); each must be 1-65535. */
function readPortLevelMtls(v: unknown, errors: string[]): Readonly<Record<number, MtlsSetting>> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isRecord(v)) {
    errors.push(`portLevelMtls must be an object, got ${describe(v)}`);
    return undefined;
  }
  const entries = Object.entries(v);
  if (entries.length > MAX_PORT_LEVEL_MTLS) {
    errors.push(`portLevelMtls has ${entries.length} entries (at most ${MAX_PORT_LEVEL_MTLS})`);
    return undefined;
  }
  const out: [number, MtlsSetting][] = [];
  for (const [key, value] of entries) {
    const port = /^[1-9][0-9]{0,4}$/.test(key) ? Number(key) : 0;
    if (port < 1 || port > 65535) {
      errors.push(`portLevelMtls key ${quote(key)} is not a port number (1-65535)`);
      continue;
    }
    out.push([port, mtlsSetting(value, `portLevelMtls[${port}]`, errors)]);
  }
  return out.length > 0 ? Object.fromEntries(out) : undefined;
}

/** spec.rules, kept as given when it is an array of objects (enforcement reads them, elsewhere). */
function readRules(v: unknown, errors: string[]): readonly unknown[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) {
    errors.push(`rules must be an array, got ${describe(v)}`);
    return undefined;
  }
  if (v.length > MAX_RULES) {
    errors.push(`rules has ${v.length} entries (at most ${MAX_RULES})`);
    return undefined;
  }
  const bad = v.findIndex((r) => !isRecord(r));
  if (bad >= 0) {
    errors.push(`rules[${bad}] must be an object, got ${describe(v[bad])}`);
    return undefined;
  }
  return v;
}
