/**
 * `ambit check`'s answer, computed by the agent from what it enforces now: the decision the destination's data path
 * would make for a hypothetical connection, and the policies it weighed. Pure over a cluster snapshot.
 */
import { AmbitError } from "../errors.js";
import { parseSpiffeId, type SpiffeId } from "../identity/spiffe.js";
import type { ClusterState } from "../kube/cluster-state.js";
import { canonicalIp } from "../kube/ip.js";
import { WorkloadIndex } from "../proxy/workload-index.js";
import { type AuthorizationDecision, authorizationResolver, connectionAttributes, weighed } from "./authorization.js";
import type { ConnectionAttributes } from "./rules.js";
import { policyWarnings } from "./warnings.js";

export interface CheckQuery {
  /** The destination pod, `namespace/name`. */
  pod: string;
  /** A SPIFFE ID (an HBONE caller), or an IP: a meshed pod's IP calls with that pod's identity, any other plaintext. */
  from: string;
  port: number;
  /** The caller's IP when `from` is a SPIFFE ID (for ipBlocks); default: none known, so no ipBlock matches it. */
  sourceIp?: string;
}

export interface CheckAnswer {
  pod: string;
  connection: ConnectionAttributes & { tls: boolean };
  decision: AuthorizationDecision;
  /** The policies that select the pod, by action, with what ambit enforces differently in each. */
  policies: Array<{ policy: string; action: string; warnings: string[] }>;
}

export class CheckError extends AmbitError {
  constructor(code: "check_bad_query" | "check_unknown_pod", message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** What an unknown caller IP is written as when `from` is a SPIFFE ID: matches no ipBlock of either family. */
const NO_SOURCE_IP = "";

export function explainCheck(
  state: ClusterState,
  rootNamespace: string,
  trustDomain: string,
  q: CheckQuery,
): CheckAnswer {
  const pod = state.pods.get(q.pod);
  if (!pod) throw new CheckError("check_unknown_pod", `no pod ${q.pod} in the cluster as this agent sees it`);
  if (!Number.isInteger(q.port) || q.port < 1 || q.port > 65535) {
    throw new CheckError("check_bad_query", `port must be 1-65535, got ${q.port}`);
  }
  let id: SpiffeId | undefined;
  let sourceIp: string;
  if (q.from.startsWith("spiffe://")) {
    try {
      id = parseSpiffeId(q.from);
    } catch (cause) {
      throw new CheckError("check_bad_query", `--from is not a SPIFFE ID: ${q.from}`, { cause });
    }
    sourceIp = q.sourceIp ?? NO_SOURCE_IP;
  } else {
    if (canonicalIp(q.from) === undefined) {
      throw new CheckError("check_bad_query", `--from must be a SPIFFE ID or an IP address, got ${q.from}`);
    }
    sourceIp = q.from;
    id = new WorkloadIndex(state, trustDomain).lookup(q.from)?.id;
  }
  if (q.sourceIp !== undefined && canonicalIp(q.sourceIp) === undefined) {
    throw new CheckError("check_bad_query", `--source-ip is not an IP address: ${q.sourceIp}`);
  }
  const destinationIp = pod.ips[0] ?? "";
  const attributes = connectionAttributes(id, sourceIp, destinationIp, q.port);
  const resolver = authorizationResolver(state.authorizationPolicies, rootNamespace);
  const applied = resolver.applied(pod);
  return {
    pod: q.pod,
    connection: { ...attributes, tls: id !== undefined },
    decision: resolver.decide(pod, attributes),
    policies: weighed(applied).map((p) => ({
      policy: p.key,
      action: p.action,
      warnings: policyWarnings(p),
    })),
  };
}
