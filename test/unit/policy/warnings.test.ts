import test from "ava";
import type { AuthorizationPolicyRecord } from "../../../agent/kube/records.js";
import { compilePolicy } from "../../../agent/policy/authorization.js";
import { PolicyWarnings, policyWarnings } from "../../../agent/policy/warnings.js";
import { capturingLogger } from "../../support/log-lines.js";

function policy(name: string, spec: Partial<AuthorizationPolicyRecord>): AuthorizationPolicyRecord {
  return { name, namespace: "shop", createdAt: "", action: "ALLOW", ...spec };
}

test("warnings say what ambit enforces differently, per rule and action", (t) => {
  const l7 = { to: [{ operation: { methods: ["GET"] } }] };
  t.deepEqual(policyWarnings(compilePolicy(policy("a", { rules: [{}, l7] }))), [
    "rules[1] names L7 fields a TCP tunnel cannot see (to[0].operation.methods): it never matches",
  ]);
  t.deepEqual(policyWarnings(compilePolicy(policy("d", { action: "DENY", rules: [l7] }))), [
    "rules[0] names L7 fields a TCP tunnel cannot see (to[0].operation.methods): enforced without them, so it denies more",
  ]);
  t.deepEqual(
    policyWarnings(compilePolicy(policy("b", { action: "DENY", rules: [{ to: [{ operation: { ports: ["x"] } }] }] }))),
    ['rules[0] cannot be read (to[0].operation.ports: "x" is not a port (1-65535)): it denies every connection'],
  );
  t.regex(policyWarnings(compilePolicy(policy("c", { action: "CUSTOM" })))[0] ?? "", /external authorizer/);
  t.regex(
    policyWarnings(compilePolicy(policy("i", { action: "DENY", invalid: 'unknown action "REJECT"' })))[0] ?? "",
    /cannot be read \(unknown action "REJECT"\): it denies every connection/,
  );
  t.deepEqual(policyWarnings(compilePolicy(policy("ok", { rules: [{ to: [{ operation: { ports: ["80"] } }] }] }))), []);
});

test("each version of a policy is warned about once; AUDIT is warned as ignored; waypoint policies are noted", (t) => {
  const { logger, lines } = capturingLogger("info");
  const warnings = new PolicyWarnings();
  const l7 = policy("l7", { rules: [{ to: [{ operation: { paths: ["/x"] } }] }] });
  const audit = policy("audit", { action: "AUDIT", rules: [{}] });
  const waypoint = policy("wp", { targetRefs: true, rules: [{}] });
  const fine = policy("fine", { rules: [{}] });
  const map = new Map([l7, audit, waypoint, fine].map((p) => [p.name, p]));
  warnings.report(map, logger);
  warnings.report(new Map(map), logger);
  const messages = () => lines.map((l) => `${l.policy}: ${l.msg}`);
  t.deepEqual(messages(), [
    "shop/l7: AuthorizationPolicy enforced differently at L4; see /config_dump",
    "shop/audit: AuthorizationPolicy action AUDIT is not supported; the policy is ignored",
    "shop/wp: AuthorizationPolicy binds to a waypoint or gateway (targetRefs); ambit does not enforce it",
  ]);
  // A changed object is a new record: warned about again.
  warnings.report(new Map([["l7", { ...l7 }]]), logger);
  t.is(lines.length, 4);
});
