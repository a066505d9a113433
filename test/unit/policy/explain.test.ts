import test from "ava";
import { formatCheck } from "../../../agent/cli/check-command.js";
import { stateFromObjects } from "../../../agent/kube/objects-state.js";
import { CheckError, explainCheck } from "../../../agent/policy/explain.js";
import { namespace, pod } from "../../kube-api/objects.js";

const meshed = { "ambit.dev/mesh": "enabled" };
const state = stateFromObjects([
  namespace("production", meshed),
  pod({ name: "api", namespace: "production", labels: { app: "api" }, serviceAccount: "api", ip: "10.0.2.5" }),
  pod({ name: "frontend", namespace: "production", serviceAccount: "frontend", ip: "10.0.1.5" }),
  pod({ name: "outside", namespace: "other", ip: "10.0.9.9" }),
  {
    apiVersion: "security.istio.io/v1",
    kind: "AuthorizationPolicy",
    metadata: { name: "api-allow-frontend", namespace: "production" },
    spec: {
      selector: { matchLabels: { app: "api" } },
      rules: [
        {
          from: [{ source: { principals: ["cluster.local/ns/production/sa/frontend"] } }],
          to: [{ operation: { ports: ["8080"] } }],
        },
      ],
    },
  },
]);
const check = (from: string, port = 8080, sourceIp?: string) =>
  explainCheck(state, "istio-system", "cluster.local", {
    pod: "production/api",
    from,
    port,
    ...(sourceIp ? { sourceIp } : {}),
  });

test("a meshed pod's IP calls with its identity; another IP calls in plaintext; a SPIFFE ID as given", (t) => {
  const meshedCaller = check("10.0.1.5");
  t.like(meshedCaller, {
    connection: { principal: "cluster.local/ns/production/sa/frontend", namespace: "production", tls: true },
    decision: { verdict: "allow", reason: "allow_matched", policy: "production/api-allow-frontend", rule: 0 },
  });
  t.deepEqual(meshedCaller.policies, [{ policy: "production/api-allow-frontend", action: "ALLOW", warnings: [] }]);
  t.like(check("10.0.9.9"), {
    connection: { principal: "", tls: false },
    decision: { verdict: "deny", reason: "allow_unmatched" },
  });
  t.like(check("spiffe://cluster.local/ns/production/sa/frontend", 9090), { decision: { verdict: "deny" } });
  t.like(check("spiffe://cluster.local/ns/production/sa/frontend", 8080, "10.0.1.5"), {
    connection: { sourceIp: "10.0.1.5" },
    decision: { verdict: "allow" },
  });
});

test("bad questions are typed errors", (t) => {
  t.throws(() => check("not-an-ip"), { instanceOf: CheckError, code: "check_bad_query" });
  t.throws(() => check("spiffe://cluster.local/ns/x"), { instanceOf: CheckError, code: "check_bad_query" });
  t.throws(() => check("10.0.1.5", 0), { instanceOf: CheckError, code: "check_bad_query" });
  t.throws(() => check("10.0.1.5", 8080, "nope"), { instanceOf: CheckError, code: "check_bad_query" });
  t.throws(
    () => explainCheck(state, "istio-system", "cluster.local", { pod: "production/none", from: "10.0.1.5", port: 1 }),
    { instanceOf: CheckError, code: "check_unknown_pod" },
  );
});

test("formatCheck says the verdict, what decided it, and each policy's warnings", (t) => {
  t.is(
    formatCheck(check("10.0.1.5")),
    [
      "production/api:8080 <- spiffe://cluster.local/ns/production/sa/frontend from 10.0.1.5: ALLOW by production/api-allow-frontend rules[0]",
      "  why: an ALLOW rule matched",
      "  policies selecting the pod:",
      "    ALLOW production/api-allow-frontend",
      "",
    ].join("\n"),
  );
  const denied = formatCheck({
    ...check("10.0.9.9"),
    policies: [{ policy: "production/x", action: "ALLOW", warnings: ["rules[0] names L7 fields"] }],
  });
  t.true(denied.startsWith("production/api:8080 <- plaintext from 10.0.9.9: DENY\n"));
  t.true(denied.includes("  why: ALLOW policies select the pod and none of their rules matched\n"));
  t.true(denied.includes("      warning: rules[0] names L7 fields\n"));
});
