import { fc, testProp } from "@fast-check/ava";
import { buildRedirectRules, type NftDocument, RedirectPlanError } from "../../../agent/redirect/rules.js";
import "./settings.js";

/**
 * The nftables plan builder: any plan either builds a document whose every port is a valid port and every port set
 * is sorted without duplicates (nft refuses a set that is not, and the whole batch with it), or is refused with a
 * RedirectPlanError, which the enroller turns into an "invalid_plan" enrollment failure.
 */

const portish = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 1, max: 65535 }) },
  { weight: 3, arbitrary: fc.constantFrom(53, 15001, 15006, 15008, 80, 80) },
  { weight: 1, arbitrary: fc.oneof(fc.integer(), fc.double(), fc.constantFrom(0, -1, 65536, 1.5, Number.NaN)) },
);
const portsArb = fc.option(fc.array(portish, { maxLength: 30 }), { nil: undefined });
const u32 = fc.integer({ min: 0, max: 0xffffffff });

/** Every `dport` match in the document: a port, or a set of them. */
function dports(doc: NftDocument): unknown[] {
  const found: unknown[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (typeof v === "object" && v !== null) {
      const o = v as Record<string, unknown>;
      const left = o.left as { payload?: { field?: string } } | undefined;
      if (o.op !== undefined && left?.payload?.field === "dport") found.push(o.right);
      Object.values(o).forEach(walk);
    }
  };
  walk(doc);
  return found;
}

const isPort = (p: unknown) => Number.isInteger(p) && (p as number) >= 1 && (p as number) <= 65535;

testProp(
  "any plan: a document of valid, sorted, distinct ports, or a RedirectPlanError",
  [
    fc.record(
      { excludeOutboundPorts: portsArb, excludeInboundPorts: portsArb, mark: u32, markMask: u32 },
      { requiredKeys: [] },
    ),
  ],
  (t, plan) => {
    let doc: NftDocument;
    try {
      doc = buildRedirectRules(plan);
    } catch (err) {
      t.true(err instanceof RedirectPlanError, String(err));
      t.true([...(plan.excludeOutboundPorts ?? []), ...(plan.excludeInboundPorts ?? [])].some((p) => !isPort(p)));
      return;
    }
    for (const right of dports(doc)) {
      if (typeof right === "object" && right !== null && "set" in right) {
        const set = (right as { set: unknown[] }).set;
        t.true(set.length > 1 && set.every(isPort), JSON.stringify(set));
        t.true(
          set.every((p, i) => i === 0 || (p as number) > (set[i - 1] as number)),
          JSON.stringify(set),
        );
      } else t.true(isPort(right), JSON.stringify(right));
    }
    const excluded = (ports: number[] | undefined) => [...new Set(ports ?? [])].sort((a, b) => a - b);
    const all = dports(doc).flatMap((r) => (typeof r === "object" && r !== null ? (r as { set: number[] }).set : [r]));
    for (const p of [...excluded(plan.excludeOutboundPorts), ...excluded(plan.excludeInboundPorts)]) {
      t.true(all.includes(p), `excluded port ${p} missing`);
    }
  },
);

/** A mark that is not a 32-bit unsigned integer would be refused by nft only at apply time ("rules_rejected"). */
testProp(
  "any plan's marks are 32-bit unsigned integers, or the plan is a RedirectPlanError",
  [fc.record({ mark: fc.oneof(u32, fc.integer(), fc.double()), markMask: fc.oneof(u32, fc.integer(), fc.double()) })],
  (t, plan) => {
    try {
      buildRedirectRules(plan);
    } catch (err) {
      t.true(err instanceof RedirectPlanError);
      return;
    }
    for (const m of [plan.mark, plan.markMask]) t.true(Number.isInteger(m) && m >= 0 && m <= 0xffffffff, String(m));
  },
);
