import test from "ava";
import type { Converted } from "../../../agent/kube/convert-common.js";
import { convertAuthorizationPolicy, convertPeerAuthentication } from "../../../agent/kube/convert-istio.js";

function record<T>(result: Converted<T>): T {
  if ("problem" in result) throw new Error(`unexpected problem: ${result.problem}`);
  return result.record;
}

function problem<T>(result: Converted<T>): string {
  if (!("problem" in result)) throw new Error(`expected a problem, got ${JSON.stringify(result.record)}`);
  return result.problem;
}

const pa = (spec: unknown, extra: Record<string, unknown> = {}) => ({
  apiVersion: "security.istio.io/v1",
  kind: "PeerAuthentication",
  metadata: { name: "default", namespace: "production", creationTimestamp: "2026-01-02T03:04:05Z", ...extra },
  spec,
});

test("PeerAuthentication: a workload policy with port-level settings", (t) => {
  const raw = pa({
    selector: { matchLabels: { app: "finance" } },
    mtls: { mode: "STRICT" },
    portLevelMtls: { "8080": { mode: "DISABLE" }, 9090: { mode: "UNSET" }, "9091": {} },
  });
  t.deepEqual(record(convertPeerAuthentication(raw)), {
    name: "default",
    namespace: "production",
    createdAt: "2026-01-02T03:04:05Z",
    selector: { app: "finance" },
    mtls: "STRICT",
    portLevelMtls: { 8080: "DISABLE", 9090: "UNSET", 9091: "UNSET" },
  });
});

test("PeerAuthentication: v1beta1 too; no mtls, no mode or null is UNSET; no spec at all is accepted", (t) => {
  const beta = { ...pa({ mtls: { mode: "PERMISSIVE" } }), apiVersion: "security.istio.io/v1beta1" };
  t.is(record(convertPeerAuthentication(beta)).mtls, "PERMISSIVE");
  for (const spec of [{}, { mtls: {} }, { mtls: null }, { mtls: { mode: null } }, undefined, null]) {
    t.is(record(convertPeerAuthentication(pa(spec))).mtls, "UNSET", JSON.stringify(spec));
  }
});

test("PeerAuthentication: an empty selector or matchLabels is no selector, as in Istio", (t) => {
  for (const selector of [undefined, null, {}, { matchLabels: {} }, { matchLabels: null }]) {
    const r = record(convertPeerAuthentication(pa({ selector, mtls: { mode: "STRICT" } })));
    t.false("selector" in r, JSON.stringify(selector));
  }
});

test("PeerAuthentication: no creationTimestamp (a manifest) gives an empty createdAt", (t) => {
  const raw = pa({ mtls: { mode: "STRICT" } });
  delete (raw.metadata as Record<string, unknown>).creationTimestamp;
  t.is(record(convertPeerAuthentication(raw)).createdAt, "");
});

test("PeerAuthentication: bad modes, selectors and ports are problems naming the policy", (t) => {
  t.is(
    problem(convertPeerAuthentication(pa({ mtls: { mode: "STRCT" } }))),
    'PeerAuthentication production/default: unknown mtls.mode "STRCT" (expected UNSET, DISABLE, PERMISSIVE, STRICT)',
  );
  const cases: [unknown, RegExp][] = [
    [{ mtls: { mode: "strict" } }, /unknown mtls.mode "strict"/],
    [{ mtls: { mode: 3 } }, /unknown mtls.mode number 3/],
    [{ mtls: "STRICT" }, /mtls must be an object/],
    [{ selector: { matchLabels: { app: 1 } } }, /selector.matchLabels\["app"\] must be a label value/],
    [{ selector: { matchLabels: { app: "fin*" } } }, /selector.matchLabels\["app"\] must be a label value/],
    [{ selector: { matchLabels: ["app"] } }, /selector.matchLabels must be an object/],
    [{ selector: "app=finance" }, /selector must be an object/],
    [{ selector: { matchLabels: { a: "b" } }, portLevelMtls: { "0": { mode: "STRICT" } } }, /key "0" is not a port/],
    [{ selector: { matchLabels: { a: "b" } }, portLevelMtls: { "65536": {} } }, /key "65536" is not a port/],
    [{ selector: { matchLabels: { a: "b" } }, portLevelMtls: { http: {} } }, /key "http" is not a port/],
    [{ selector: { matchLabels: { a: "b" } }, portLevelMtls: { "080": {} } }, /key "080" is not a port/],
    [
      { selector: { matchLabels: { a: "b" } }, portLevelMtls: { "8080": { mode: "OFF" } } },
      /portLevelMtls\[8080\].mode "OFF"/,
    ],
    [
      { selector: { matchLabels: { a: "b" } }, portLevelMtls: { "8080": "STRICT" } },
      /portLevelMtls\[8080\] must be an object/,
    ],
    [{ portLevelMtls: [] }, /portLevelMtls must be an object/],
    [
      {
        selector: { matchLabels: { a: "b" } },
        portLevelMtls: Object.fromEntries(Array.from({ length: 1025 }, (_, i) => [i + 1, {}])),
      },
      /1025 entries \(at most 1024\)/,
    ],
  ];
  for (const [spec, expected] of cases) {
    t.regex(problem(convertPeerAuthentication(pa(spec))), expected, JSON.stringify(spec).slice(0, 80));
  }
  t.regex(problem(convertPeerAuthentication(pa({}, { creationTimestamp: "last week" }))), /creationTimestamp must be/);
  t.regex(
    problem(convertPeerAuthentication({ ...pa({}), kind: "AuthorizationPolicy" })),
    /kind is "AuthorizationPolicy"/,
  );
  t.regex(
    problem(convertPeerAuthentication({ ...pa({}), apiVersion: "security.istio.io/v2" })),
    /unsupported apiVersion/,
  );
});

const ap = (spec: unknown) => ({
  apiVersion: "security.istio.io/v1",
  kind: "AuthorizationPolicy",
  metadata: { name: "allow-web", namespace: "shop" },
  spec,
});

test("AuthorizationPolicy: action defaults to ALLOW; rules are kept as given", (t) => {
  const rules = [
    { from: [{ source: { principals: ["cluster.local/ns/shop/sa/web"] } }], to: [{ operation: { ports: ["8080"] } }] },
  ];
  t.deepEqual(record(convertAuthorizationPolicy(ap({ selector: { matchLabels: { app: "db" } }, rules }))), {
    name: "allow-web",
    namespace: "shop",
    createdAt: "",
    selector: { app: "db" },
    action: "ALLOW",
    rules,
  });
  for (const action of ["DENY", "AUDIT", "CUSTOM"] as const) {
    t.is(record(convertAuthorizationPolicy(ap({ action }))).action, action);
  }
  // No rules: kept absent (an ALLOW policy without rules matches nothing; a DENY one without rules denies nothing).
  t.false("rules" in record(convertAuthorizationPolicy(ap({}))));
  t.deepEqual(record(convertAuthorizationPolicy(ap({ rules: [{}] }))).rules, [{}]);
});

test("AuthorizationPolicy: a spec ambit cannot read is kept as invalid (it tightens), not skipped", (t) => {
  const reject = record(convertAuthorizationPolicy(ap({ action: "REJECT", rules: [{}] })));
  t.is(reject.action, "DENY");
  t.regex(reject.invalid ?? "", /^unknown action "REJECT"/);
  t.regex(record(convertAuthorizationPolicy(ap({ action: "" }))).invalid ?? "", /unknown action ""/);
  // A bad rules list keeps the action: an ALLOW then allows nothing, a DENY denies everything (agent/policy).
  const badRules = record(convertAuthorizationPolicy(ap({ rules: {} })));
  t.is(badRules.action, "ALLOW");
  t.regex(badRules.invalid ?? "", /rules must be an array/);
  t.regex(
    record(convertAuthorizationPolicy(ap({ rules: [{}, "allow"] }))).invalid ?? "",
    /rules\[1\] must be an object/,
  );
  t.regex(record(convertAuthorizationPolicy(ap({ rules: [[]] }))).invalid ?? "", /rules\[0\] must be an object/);
  t.regex(record(convertAuthorizationPolicy(ap({ rules: Array(1025).fill({}) }))).invalid ?? "", /at most 1024/);
  // An unreadable selector: the widest scope it could have meant (namespace-wide), never a narrower one.
  const badSelector = record(convertAuthorizationPolicy(ap({ selector: { matchLabels: { "": "x", app: "db" } } })));
  t.false("selector" in badSelector);
  t.regex(badSelector.invalid ?? "", /invalid keys ""/);
  t.false("invalid" in record(convertAuthorizationPolicy(ap({ action: "DENY", rules: [{}] }))));
  // The object itself unusable (spec not an object, bad name): skipped with a problem, as every kind.
  t.regex(problem(convertAuthorizationPolicy(ap("allow"))), /spec must be an object/);
});

test("AuthorizationPolicy: targetRef(s) is recorded (a waypoint's or gateway's policy, not the pods')", (t) => {
  t.true(record(convertAuthorizationPolicy(ap({ targetRefs: [{ kind: "Service", name: "api" }] }))).targetRefs);
  t.true(record(convertAuthorizationPolicy(ap({ targetRef: { kind: "Gateway", name: "gw" } }))).targetRefs);
  t.false("targetRefs" in record(convertAuthorizationPolicy(ap({}))));
});
