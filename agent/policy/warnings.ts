/**
 * What an operator must be told about an AuthorizationPolicy ambit enforces differently from what it says: L7
 * fields a TCP tunnel cannot see, rules or specs it cannot read, actions it cannot carry out. Pure, but for the
 * once-per-object logger at the end.
 */

import type { AuthorizationPolicyRecord } from "../kube/records.js";
import type { Logger } from "../log.js";
import { type CompiledPolicy, compilePolicy } from "./authorization.js";

export function policyWarnings(policy: CompiledPolicy): string[] {
  const out: string[] = [];
  if (policy.invalid !== undefined) {
    out.push(
      `the spec cannot be read (${policy.invalid}): ${policy.action === "ALLOW" ? "it allows nothing" : "it denies every connection"} to the pods it selects`,
    );
    return out;
  }
  if (policy.action === "CUSTOM") {
    out.push("CUSTOM needs an external authorizer, which ambit does not have: the pods it selects accept nothing");
  }
  for (const [i, rule] of policy.rules.entries()) {
    if (rule.broken !== undefined) {
      out.push(
        `rules[${i}] cannot be read (${rule.broken}): ${policy.action === "DENY" ? "it denies every connection" : "it never matches"}`,
      );
    } else if (rule.l7.length > 0) {
      const fields = rule.l7.join(", ");
      out.push(
        policy.action === "DENY"
          ? `rules[${i}] names L7 fields a TCP tunnel cannot see (${fields}): enforced without them, so it denies more`
          : `rules[${i}] names L7 fields a TCP tunnel cannot see (${fields}): it never matches`,
      );
    }
  }
  return out;
}

/** Logs each policy's warnings once per version of the object (records are immutable: a change is a new one). */
export class PolicyWarnings {
  readonly #seen = new WeakSet<AuthorizationPolicyRecord>();

  report(policies: ReadonlyMap<string, AuthorizationPolicyRecord>, log: Logger): void {
    for (const record of policies.values()) {
      if (this.#seen.has(record)) continue;
      this.#seen.add(record);
      const policy = `${record.namespace}/${record.name}`;
      if (record.targetRefs) {
        log.info(
          { policy },
          "AuthorizationPolicy binds to a waypoint or gateway (targetRefs); ambit does not enforce it",
        );
        continue;
      }
      if (record.action === "AUDIT") {
        log.warn({ policy }, "AuthorizationPolicy action AUDIT is not supported; the policy is ignored");
        continue;
      }
      const warnings = policyWarnings(compilePolicy(record));
      if (warnings.length > 0) {
        log.warn({ policy, warnings }, "AuthorizationPolicy enforced differently at L4; see /config_dump");
      }
    }
  }
}
