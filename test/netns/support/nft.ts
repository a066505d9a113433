/** What ambit's nftables table in a pod's namespace holds, read back through the same bindings the agent uses. */

import { TABLE } from "../../../agent/redirect/rules.js";
import { inNetns } from "../../../native-bindings/netns.js";
import { runNftJson } from "../../../native-bindings/nftables.js";

function list(netns: string, what: object): Array<Record<string, unknown>> {
  const out = inNetns(netns, () => runNftJson({ nftables: [{ list: what }] })) as {
    nftables: Array<Record<string, unknown>>;
  };
  return out.nftables;
}

export function tableExists(netns: string): boolean {
  return list(netns, { tables: {} }).some((o) => (o.table as { name?: string } | undefined)?.name === TABLE);
}

/** Rules in ambit's table (0 when there is no table). */
export function ruleCount(netns: string): number {
  if (!tableExists(netns)) return 0;
  return list(netns, { table: { family: "inet", name: TABLE } }).filter((o) => "rule" in o).length;
}
