/**
 * Pure construction of the node-side (agent's own namespace) table that keeps kubelet probes out of the mesh:
 * connections the node itself originates towards an enrolled pod are SNATed to PROBE_SOURCE, which every pod's
 * prerouting chain lets through untouched. Forwarded traffic (from other pods and nodes) has a source address that is
 * not local to the node, so `fib saddr type local` selects exactly the node's own connections.
 */
import { isIPv4 } from "node:net";
import { PROBE_SOURCE_IPV4, PROBE_SOURCE_IPV6 } from "./ports.js";
import type { NftDocument } from "./rules.js";

export const HOST_TABLE = "ambit-host";
const FAMILY = "inet";

function snatRule(proto: "ip" | "ip6", addrs: string[], to: string) {
  return {
    add: {
      rule: {
        family: FAMILY,
        table: HOST_TABLE,
        chain: "postrouting",
        expr: [
          { match: { op: "==", left: { meta: { key: "l4proto" } }, right: "tcp" } },
          { match: { op: "==", left: { payload: { protocol: proto, field: "daddr" } }, right: { set: addrs } } },
          { match: { op: "==", left: { fib: { flags: ["saddr"], result: "type" } }, right: "local" } },
          { snat: { family: proto, addr: to } },
        ],
      },
    },
  };
}

/** The whole node table for the current set of enrolled pod IPs, replacing the previous one atomically. */
export function buildHostRules(enrolledPodIps: string[]): NftDocument {
  const v4 = enrolledPodIps.filter((ip) => isIPv4(ip)).sort();
  const v6 = enrolledPodIps.filter((ip) => !isIPv4(ip)).sort();
  return {
    nftables: [
      { add: { table: { family: FAMILY, name: HOST_TABLE } } },
      { delete: { table: { family: FAMILY, name: HOST_TABLE } } },
      ...(v4.length + v6.length === 0
        ? []
        : [
            { add: { table: { family: FAMILY, name: HOST_TABLE } } },
            {
              add: {
                chain: {
                  family: FAMILY,
                  table: HOST_TABLE,
                  name: "postrouting",
                  type: "nat",
                  hook: "postrouting",
                  prio: 100,
                  policy: "accept",
                },
              },
            },
            ...(v4.length ? [snatRule("ip", v4, PROBE_SOURCE_IPV4)] : []),
            ...(v6.length ? [snatRule("ip6", v6, PROBE_SOURCE_IPV6)] : []),
          ]),
    ],
  };
}
