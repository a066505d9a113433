/**
 * Pure construction of the nftables JSON that redirects one pod's TCP into ambit's in-pod listeners.
 *
 * REDIRECT rather than TPROXY: the listeners live inside the pod's own namespace, so rewriting the destination to a
 * local port is enough. The original destination is read back with SO_ORIGINAL_DST, conntrack undoes the rewrite
 * for replies, and no policy routing (ip rule + local route table) or IP_TRANSPARENT is needed. Inbound REDIRECT in
 * prerouting keeps the client IP as source, which is all the inbound side needs.
 *
 * Capture does not depend on the pod's addresses: every TCP connection entering the pod on any interface but `lo`
 * is captured, in both families, whatever address it is sent to. Matching only the IPs the pod spec lists let a
 * neighbour on the same bridge reach a STRICT pod's app in plaintext through an address the spec does not list (its
 * IPv6 link-local address, a secondary address) or a family it does not list. Outbound was already captured for
 * every destination. As in-pod ztunnel, loopback stays uncaptured in both directions.
 *
 * Kubelet probes: the node rewrites the source of its own connections to pods to PROBE_SOURCE (see
 * host-rules.ts, as Istio does with 169.254.7.127); the pod's prerouting chain returns early for that source, so
 * probes reach the app directly and keep working under STRICT.
 *
 * DNS (TCP 53) is left alone for now; UDP is never touched.
 */
import {
  HBONE_PORT,
  INBOUND_PLAINTEXT_PORT,
  OUTBOUND_PORT,
  PROBE_SOURCE_IPV4,
  PROBE_SOURCE_IPV6,
  PROXY_MARK,
  PROXY_MARK_MASK,
} from "./ports.js";

export const TABLE = "ambit";
const FAMILY = "inet";

export interface RedirectPlan {
  excludeOutboundPorts?: number[];
  excludeInboundPorts?: number[];
  mark?: number;
  markMask?: number;
}

type Expr = Record<string, unknown>;
type Command = Record<string, unknown>;
export interface NftDocument {
  nftables: Command[];
}

const tcp: Expr = { match: { op: "==", left: { meta: { key: "l4proto" } }, right: "tcp" } };
const ret: Expr = { return: null };

function dport(ports: number[]): Expr {
  const right = ports.length === 1 ? ports[0] : { set: ports };
  return { match: { op: "==", left: { payload: { protocol: "tcp", field: "dport" } }, right } };
}

function ifname(key: "iifname" | "oifname", name: string): Expr {
  return { match: { op: "==", left: { meta: { key } }, right: name } };
}

function markMatch(mark: number, mask: number): Expr {
  return { match: { op: "==", left: { "&": [{ meta: { key: "mark" } }, mask] }, right: mark } };
}

function sourceIs(proto: "ip" | "ip6", addr: string): Expr {
  return { match: { op: "==", left: { payload: { protocol: proto, field: "saddr" } }, right: addr } };
}

function rule(chain: string, ...expr: Expr[]): Command {
  return { add: { rule: { family: FAMILY, table: TABLE, chain, expr } } };
}

function natChain(name: string, hook: "output" | "prerouting"): Command {
  return { add: { chain: { family: FAMILY, table: TABLE, name, type: "nat", hook, prio: -100, policy: "accept" } } };
}

export class RedirectPlanError extends Error {
  readonly code = "invalid_redirect_plan";
}

function validPorts(ports: number[] | undefined, what: string): number[] {
  for (const p of ports ?? []) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) throw new RedirectPlanError(`${what}: invalid port ${p}`);
  }
  return [...new Set(ports ?? [])].sort((a, b) => a - b);
}

/**
 * The whole table for one pod as one batch. It starts by creating and deleting the table, so applying it replaces
 * whatever an earlier agent left (re-enrollment after a restart) in the same atomic transaction: there is never a
 * moment with no rules (traffic would bypass the proxy) or with two copies.
 */
export function buildRedirectRules(plan: RedirectPlan = {}): NftDocument {
  const mark = plan.mark ?? PROXY_MARK;
  const mask = plan.markMask ?? PROXY_MARK_MASK;
  const outExcluded = validPorts(plan.excludeOutboundPorts, "excludeOutboundPorts");
  const inExcluded = validPorts(plan.excludeInboundPorts, "excludeInboundPorts");

  const outbound = [
    // The proxy's own sockets (marked) and anything staying inside the pod are never captured.
    rule("output", markMatch(mark, mask), ret),
    rule("output", ifname("oifname", "lo"), ret),
    rule("output", tcp, dport([53]), ret),
    ...(outExcluded.length ? [rule("output", tcp, dport(outExcluded), ret)] : []),
    rule("output", tcp, { redirect: { port: OUTBOUND_PORT } }),
  ];

  const inbound = [
    rule("prerouting", ifname("iifname", "lo"), ret),
    ...(inExcluded.length ? [rule("prerouting", tcp, dport(inExcluded), ret)] : []),
    rule("prerouting", sourceIs("ip", PROBE_SOURCE_IPV4), ret),
    rule("prerouting", sourceIs("ip6", PROBE_SOURCE_IPV6), ret),
    // HBONE arrives on its own listener (bound to every address); redirecting it to the plaintext port would unwrap
    // nothing.
    rule("prerouting", tcp, dport([HBONE_PORT]), ret),
    rule("prerouting", tcp, { redirect: { port: INBOUND_PLAINTEXT_PORT } }),
  ];

  return {
    nftables: [
      { add: { table: { family: FAMILY, name: TABLE } } },
      { delete: { table: { family: FAMILY, name: TABLE } } },
      { add: { table: { family: FAMILY, name: TABLE } } },
      natChain("output", "output"),
      natChain("prerouting", "prerouting"),
      ...outbound,
      ...inbound,
    ],
  };
}

/** Removes ambit's table whether or not it exists (add-then-delete keeps it one atomic, idempotent batch). */
export function buildRemoveRules(): NftDocument {
  return {
    nftables: [
      { add: { table: { family: FAMILY, name: TABLE } } },
      { delete: { table: { family: FAMILY, name: TABLE } } },
    ],
  };
}
