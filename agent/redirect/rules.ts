/**
 * Pure construction of the nftables JSON that redirects one pod's TCP into ambit's in-pod listeners.
 *
 * REDIRECT rather than TPROXY for capture: the listeners live inside the pod's own namespace, so rewriting the
 * destination to a local port is enough. The original destination is read back with SO_ORIGINAL_DST, conntrack
 * undoes the rewrite for replies, and the listeners need no IP_TRANSPARENT. Inbound REDIRECT in prerouting keeps the
 * client IP as source, which the agent passes on to the app (below).
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
 * The app sees the caller: the agent connects to the app from a transparent socket bound to the caller's address
 * (pod-socket.ts). The app's replies go to that address, which is not local, so they would leave through the pod's
 * interface. The agent's packets reach the app over `lo` still carrying the proxy mark; the `mark` chain turns that
 * into a connection mark, the `return` chain copies it onto the app's replies (a route chain, so the changed mark
 * routes again), and a policy-routing rule for that mark (return-routing.ts) sends them to a `local` route on `lo`,
 * back to the agent. The `guard` chain drops any packet of such a connection that would still leave the pod: if the
 * routing rule is missing, the app's handshake fails instead of reaching the caller's address outside the mesh.
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
  RETURN_MARK,
  RETURN_MARK_MASK,
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

const LINK_LOCAL = { prefix: { addr: "fe80::", len: 10 } };
const tcp: Expr = { match: { op: "==", left: { meta: { key: "l4proto" } }, right: "tcp" } };
const ret: Expr = { return: null };

function dport(ports: number[]): Expr {
  const right = ports.length === 1 ? ports[0] : { set: ports };
  return { match: { op: "==", left: { payload: { protocol: "tcp", field: "dport" } }, right } };
}

function ifname(key: "iifname" | "oifname", name: string, op: "==" | "!=" = "=="): Expr {
  return { match: { op, left: { meta: { key } }, right: name } };
}

function markMatch(mark: number, mask: number, op: "==" | "!=" = "=="): Expr {
  return { match: { op, left: { "&": [{ meta: { key: "mark" } }, mask] }, right: mark } };
}

function connmarkMatch(mark: number, mask: number): Expr {
  return { match: { op: "==", left: { "&": [{ ct: { key: "mark" } }, mask] }, right: mark } };
}

/** ct mark = (ct mark without the masked bits) | mark: other bits of the connection mark are not ambit's. */
function setConnmark(mark: number, mask: number): Expr {
  const keep = ~mask >>> 0;
  return { mangle: { key: { ct: { key: "mark" } }, value: { "|": [{ "&": [{ ct: { key: "mark" } }, keep] }, mark] } } };
}

function sourceIs(proto: "ip" | "ip6", addr: string): Expr {
  return { match: { op: "==", left: { payload: { protocol: proto, field: "saddr" } }, right: addr } };
}

function rule(chain: string, ...expr: Expr[]): Command {
  return { add: { rule: { family: FAMILY, table: TABLE, chain, expr } } };
}

/**
 * prio -100 (dstnat) for the nat chains; -150 (mangle): before them; 0 (filter) for the guard, after routing decided
 * the interface.
 */
function baseChain(
  name: string,
  type: "nat" | "filter" | "route",
  hook: "output" | "prerouting" | "postrouting",
  prio: number,
): Command {
  return { add: { chain: { family: FAMILY, table: TABLE, name, type, hook, prio, policy: "accept" } } };
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

/** nftables reads a mark as a 32-bit unsigned integer; anything else would be refused only when the batch is run. */
function validMark(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RedirectPlanError(`${what}: not a 32-bit unsigned integer: ${value}`);
  }
  return value;
}

/**
 * The whole table for one pod as one batch. It starts by creating and deleting the table, so applying it replaces
 * whatever an earlier agent left (re-enrollment after a restart) in the same atomic transaction: there is never a
 * moment with no rules (traffic would bypass the proxy) or with two copies.
 */
export function buildRedirectRules(plan: RedirectPlan = {}): NftDocument {
  const mark = validMark(plan.mark ?? PROXY_MARK, "mark");
  const mask = validMark(plan.markMask ?? PROXY_MARK_MASK, "markMask");
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

  const returned = [
    // Every packet entering the pod passes here: those from outside leave at the first rule.
    rule("mark", ifname("iifname", "lo", "!="), ret),
    // Not to a link-local address: the agent binds that socket to the pod's interface (a link-local address means
    // nothing without one), and so is the app's side; routes to `lo` do not apply to it, and it needs none.
    rule(
      "mark",
      { match: { op: "==", left: { payload: { protocol: "ip6", field: "daddr" } }, right: LINK_LOCAL } },
      ret,
    ),
    // The agent's packets keep their socket mark across lo: every connection it makes to something in the pod.
    rule(
      "mark",
      markMatch(mark, mask),
      { match: { op: "in", left: { ct: { key: "state" } }, right: "new" } },
      setConnmark(RETURN_MARK, RETURN_MARK_MASK),
    ),
    // The app's side of those connections (not the agent's own packets, which route by their socket mark).
    rule("return", connmarkMatch(RETURN_MARK, RETURN_MARK_MASK), markMatch(mark, mask, "!="), {
      mangle: { key: { meta: { key: "mark" } }, value: { ct: { key: "mark" } } },
    }),
    rule("guard", connmarkMatch(RETURN_MARK, RETURN_MARK_MASK), ifname("oifname", "lo", "!="), { drop: null }),
  ];

  return {
    nftables: [
      { add: { table: { family: FAMILY, name: TABLE } } },
      { delete: { table: { family: FAMILY, name: TABLE } } },
      { add: { table: { family: FAMILY, name: TABLE } } },
      baseChain("output", "nat", "output", -100),
      baseChain("prerouting", "nat", "prerouting", -100),
      baseChain("mark", "filter", "prerouting", -150),
      baseChain("return", "route", "output", -150),
      baseChain("guard", "filter", "postrouting", 0),
      ...outbound,
      ...inbound,
      ...returned,
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
