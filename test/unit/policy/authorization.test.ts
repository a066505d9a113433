import test from "ava";
import type { SpiffeId } from "../../../agent/identity/spiffe.js";
import type { AuthorizationPolicyRecord } from "../../../agent/kube/records.js";
import {
  type AuthorizationDecision,
  AuthorizationResolver,
  type AuthorizationTarget,
  authorizationResolver,
  compilePolicy,
  connectionAttributes,
} from "../../../agent/policy/authorization.js";

const ROOT = "istio-system";
const api: AuthorizationTarget = { namespace: "production", labels: { app: "api" } };
const web: AuthorizationTarget = { namespace: "production", labels: { app: "web" } };
const frontend: SpiffeId = { trustDomain: "cluster.local", namespace: "production", serviceAccount: "frontend" };
const intruder: SpiffeId = { trustDomain: "cluster.local", namespace: "staging", serviceAccount: "batch" };

function policy(name: string, spec: Partial<AuthorizationPolicyRecord>, namespace = "production") {
  return { name, namespace, createdAt: "", action: "ALLOW", ...spec } as AuthorizationPolicyRecord;
}

/** A connection to 10.0.0.9:8080 from `id` (undefined: plaintext) at `ip`. */
function conn(id: SpiffeId | undefined, ip = "10.1.0.5", port = 8080) {
  return connectionAttributes(id, ip, "10.0.0.9", port);
}

function decide(policies: AuthorizationPolicyRecord[], pod: AuthorizationTarget, c = conn(frontend)) {
  return new AuthorizationResolver(policies, ROOT).decide(pod, c);
}

function verdicts(policies: AuthorizationPolicyRecord[], pod: AuthorizationTarget, cs: ReturnType<typeof conn>[]) {
  const r = new AuthorizationResolver(policies, ROOT);
  return cs.map((c) => r.decide(pod, c).verdict);
}

test("no policy selects the pod: allowed", (t) => {
  t.deepEqual(decide([], api), { verdict: "allow", reason: "no_policy" });
  t.deepEqual(decide([policy("other", { selector: { app: "db" }, rules: [] })], api), {
    verdict: "allow",
    reason: "no_policy",
  });
});

test("the seed's policy (methods: GET) cannot match at L4: nothing reaches app: api, as in ztunnel", (t) => {
  const seed = policy("api-allow-frontend", {
    selector: { app: "api" },
    rules: [
      {
        from: [{ source: { principals: ["cluster.local/ns/production/sa/frontend"] } }],
        to: [{ operation: { methods: ["GET"] } }],
      },
    ],
  });
  t.deepEqual(decide([seed], api, conn(frontend)), { verdict: "deny", reason: "allow_unmatched" });
  t.deepEqual(verdicts([seed], api, [conn(intruder), conn(undefined)]), ["deny", "deny"]);
  // Pods it does not select are untouched.
  t.is(decide([seed], web, conn(intruder)).verdict, "allow");
  // What to write instead at L4: ports, not methods.
  const l4 = policy("api-allow-frontend", {
    selector: { app: "api" },
    rules: [
      {
        from: [{ source: { principals: ["cluster.local/ns/production/sa/frontend"] } }],
        to: [{ operation: { ports: ["8080"] } }],
      },
    ],
  });
  t.deepEqual(decide([l4], api, conn(frontend)), {
    verdict: "allow",
    reason: "allow_matched",
    policy: "production/api-allow-frontend",
    rule: 0,
  });
  t.deepEqual(verdicts([l4], api, [conn(intruder), conn(undefined), conn(frontend, undefined, 9090)]), [
    "deny",
    "deny",
    "deny",
  ]);
});

test("DENY beats ALLOW; an ALLOW without rules allows nothing; rules: [{}] allows all", (t) => {
  const allowAll = policy("allow-all", { rules: [{}] });
  const denyStaging = policy("deny-staging", {
    action: "DENY",
    rules: [{ from: [{ source: { namespaces: ["staging"] } }] }],
  });
  t.deepEqual(decide([allowAll, denyStaging], api, conn(intruder)), {
    verdict: "deny",
    reason: "deny_matched",
    policy: "production/deny-staging",
    rule: 0,
  });
  t.is(decide([allowAll, denyStaging], api, conn(frontend)).verdict, "allow");
  t.deepEqual(decide([policy("deny-nothing", { rules: undefined })], api), {
    verdict: "deny",
    reason: "allow_unmatched",
  });
  // A DENY without rules denies nothing.
  t.is(decide([policy("d", { action: "DENY" })], api).verdict, "allow");
});

test("scopes: mesh-wide in the root namespace (with a selector: every namespace), namespace-wide, workload", (t) => {
  const meshDeny = policy(
    "no-staging",
    { action: "DENY", rules: [{ from: [{ source: { namespaces: ["staging"] } }] }] },
    ROOT,
  );
  const other: AuthorizationTarget = { namespace: "shop", labels: { app: "api" } };
  t.is(decide([meshDeny], api, conn(intruder)).verdict, "deny");
  t.is(decide([meshDeny], other, conn(intruder)).verdict, "deny");
  const rootSelected = policy("api-deny", { action: "DENY", selector: { app: "api" }, rules: [{}] }, ROOT);
  t.is(decide([rootSelected], other).verdict, "deny");
  t.is(decide([rootSelected], { namespace: "shop", labels: { app: "web" } }).verdict, "allow");
  // A namespace's policy stays in its namespace.
  const shopOnly = policy("deny-all", { action: "DENY", rules: [{}] }, "shop");
  t.is(decide([shopOnly], other).verdict, "deny");
  t.is(decide([shopOnly], api).verdict, "allow");
  // A selector needs every label.
  const both = policy("both", { action: "DENY", selector: { app: "api", tier: "backend" }, rules: [{}] });
  t.is(decide([both], api).verdict, "allow");
  t.is(decide([both], { namespace: "production", labels: { app: "api", tier: "backend" } }).verdict, "deny");
});

test("principals and namespaces: exact, prefix*, *suffix, * (any authenticated peer) and their not* forms", (t) => {
  const allow = (source: Record<string, unknown>) => [
    policy("p", { selector: { app: "api" }, rules: [{ from: [{ source }] }] }),
  ];
  const peers = [conn(frontend), conn(intruder), conn(undefined)];
  t.deepEqual(verdicts(allow({ principals: ["*"] }), api, peers), ["allow", "allow", "deny"]);
  t.deepEqual(verdicts(allow({ notPrincipals: ["*"] }), api, peers), ["deny", "deny", "allow"]);
  t.deepEqual(verdicts(allow({ principals: ["cluster.local/ns/production/*"] }), api, peers), [
    "allow",
    "deny",
    "deny",
  ]);
  t.deepEqual(verdicts(allow({ principals: ["*/sa/batch"] }), api, peers), ["deny", "allow", "deny"]);
  t.deepEqual(verdicts(allow({ notPrincipals: ["*/sa/batch"] }), api, peers), ["allow", "deny", "allow"]);
  t.deepEqual(verdicts(allow({ namespaces: ["prod*"] }), api, peers), ["allow", "deny", "deny"]);
  t.deepEqual(verdicts(allow({ notNamespaces: ["staging"] }), api, peers), ["allow", "deny", "allow"]);
  // Fields of one source are ANDed; sources of one rule are ORed.
  t.deepEqual(verdicts(allow({ principals: ["*"], namespaces: ["staging"] }), api, peers), ["deny", "allow", "deny"]);
  const either = [
    policy("p", {
      selector: { app: "api" },
      rules: [{ from: [{ source: { namespaces: ["staging"] } }, { source: { notPrincipals: ["*"] } }] }],
    }),
  ];
  t.deepEqual(verdicts(either, api, peers), ["deny", "allow", "allow"]);
});

test("ipBlocks, notIpBlocks and remoteIpBlocks take IPs and CIDRs of both families", (t) => {
  const allow = (source: Record<string, unknown>) => [policy("p", { rules: [{ from: [{ source }] }] })];
  const ips = ["10.1.0.5", "10.2.0.5", "fd00::1:5", "::ffff:10.1.0.7"].map((ip) => conn(frontend, ip));
  t.deepEqual(verdicts(allow({ ipBlocks: ["10.1.0.0/16"] }), api, ips), ["allow", "deny", "deny", "allow"]);
  t.deepEqual(verdicts(allow({ ipBlocks: ["10.2.0.5", "fd00::/64"] }), api, ips), ["deny", "allow", "allow", "deny"]);
  t.deepEqual(verdicts(allow({ notIpBlocks: ["10.0.0.0/8"] }), api, ips), ["deny", "deny", "allow", "deny"]);
  t.deepEqual(verdicts(allow({ remoteIpBlocks: ["fd00::1:5/128"] }), api, ips), ["deny", "deny", "allow", "deny"]);
  t.deepEqual(verdicts(allow({ notRemoteIpBlocks: ["10.1.0.5"] }), api, ips), ["deny", "allow", "allow", "allow"]);
});

test("ports and notPorts (strings, as Istio's schema has them, or numbers)", (t) => {
  const allow = (operation: Record<string, unknown>) => [policy("p", { rules: [{ to: [{ operation }] }] })];
  const ports = [8080, 9090, 5432].map((p) => conn(frontend, undefined, p));
  t.deepEqual(verdicts(allow({ ports: ["8080", 9090] }), api, ports), ["allow", "allow", "deny"]);
  t.deepEqual(verdicts(allow({ notPorts: ["5432"] }), api, ports), ["allow", "allow", "deny"]);
});

test("when: source.ip, remote.ip, source.namespace, source.principal, destination.ip, destination.port", (t) => {
  const allowWhen = (when: Record<string, unknown>[]) => [policy("p", { rules: [{ when }] })];
  const c = conn(frontend, "10.1.0.5", 8080);
  const cases: [Record<string, unknown>, boolean][] = [
    [{ key: "source.ip", values: ["10.1.0.0/24"] }, true],
    [{ key: "remote.ip", notValues: ["10.1.0.5"] }, false],
    [{ key: "source.namespace", values: ["production"] }, true],
    [{ key: "source.principal", values: ["*/sa/frontend"] }, true],
    [{ key: "destination.ip", values: ["10.0.0.9"] }, true],
    [{ key: "destination.ip", values: ["10.0.0.10/32"] }, false],
    [{ key: "destination.port", values: ["8080"] }, true],
    [{ key: "destination.port", notValues: ["8080"] }, false],
  ];
  for (const [cond, allowed] of cases) {
    t.is(decide(allowWhen([cond]), api, c).verdict, allowed ? "allow" : "deny", JSON.stringify(cond));
  }
  // Every condition must hold.
  t.is(decide(allowWhen([cases[0]?.[0] ?? {}, cases[5]?.[0] ?? {}]), api, c).verdict, "deny");
});

test("L7 fields: an ALLOW rule naming one never matches; a DENY rule is read without them (it denies more)", (t) => {
  const l7Allow = policy("allow-get", { rules: [{ to: [{ operation: { methods: ["GET"], ports: ["8080"] } }] }] });
  t.is(decide([l7Allow], api).verdict, "deny");
  const header = policy("allow-hdr", { rules: [{ when: [{ key: "request.headers[x-user]", values: ["me"] }] }] });
  t.is(decide([header], api).verdict, "deny");
  const requestPrincipal = policy("allow-jwt", { rules: [{ from: [{ source: { requestPrincipals: ["*"] } }] }] });
  t.is(decide([requestPrincipal], api).verdict, "deny");
  t.deepEqual(
    [l7Allow, header].map((p) => compilePolicy(p).rules.map((r) => r.l7)),
    [[["to[0].operation.methods"]], [["when[0](request.headers[x-user])"]]],
  );
  // DENY of POST from staging: at L4, deny everything from staging (the method cannot be seen).
  const denyPost = policy("deny-post", {
    action: "DENY",
    rules: [{ from: [{ source: { namespaces: ["staging"] } }], to: [{ operation: { methods: ["POST"] } }] }],
  });
  t.deepEqual(verdicts([denyPost], api, [conn(intruder), conn(frontend)]), ["deny", "allow"]);
  // Another ALLOW rule of the same policy still allows.
  const mixed = policy("mixed", {
    rules: [{ to: [{ operation: { paths: ["/x"] } }] }, { from: [{ source: { principals: ["*"] } }] }],
  });
  t.deepEqual(decide([mixed], api), { verdict: "allow", reason: "allow_matched", policy: "production/mixed", rule: 1 });
});

test("CUSTOM denies the pods it selects; AUDIT and waypoint-bound (targetRefs) policies change nothing", (t) => {
  t.deepEqual(decide([policy("ext", { action: "CUSTOM", rules: [{}] })], api), {
    verdict: "deny",
    reason: "custom_unsupported",
    policy: "production/ext",
  });
  t.is(decide([policy("audit", { action: "AUDIT", rules: [{}] })], api).verdict, "allow");
  t.is(decide([policy("wp", { action: "DENY", rules: [{}], targetRefs: true })], api).verdict, "allow");
});

test("what ambit cannot read tightens: a broken ALLOW rule matches nothing, a broken DENY rule or policy denies all", (t) => {
  const brokenAllow = policy("bad-cidr", {
    rules: [
      { from: [{ source: { ipBlocks: ["10.0.0.0/33"] } }] },
      { from: [{ source: { namespaces: ["production"] } }] },
    ],
  });
  t.regex(compilePolicy(brokenAllow).rules[0]?.broken ?? "", /10\.0\.0\.0\/33/);
  t.deepEqual(verdicts([brokenAllow], api, [conn(frontend), conn(intruder)]), ["allow", "deny"]);
  const brokenDeny = policy("bad-port", { action: "DENY", rules: [{ to: [{ operation: { ports: ["http"] } }] }] });
  t.deepEqual(decide([brokenDeny], api), {
    verdict: "deny",
    reason: "invalid_policy",
    policy: "production/bad-port",
    rule: 0,
  });
  for (const bad of [
    { principals: ["a*b"] },
    { principals: "cluster.local/ns/x/sa/y" },
    { ipBlocks: ["10.0.0.1/8/1"] },
    { namespaces: [7] },
  ]) {
    const p = policy("bad", { action: "DENY", rules: [{ from: [{ source: bad }] }] });
    t.is(decide([p], api).reason, "invalid_policy", JSON.stringify(bad));
  }
  const invalid = policy("reject", { action: "DENY", invalid: 'unknown action "REJECT"' });
  t.deepEqual(decide([invalid], api), { verdict: "deny", reason: "invalid_policy", policy: "production/reject" });
  const invalidAllow = policy("allow", { invalid: "rules must be an array", rules: undefined });
  t.is(decide([invalidAllow], api).verdict, "deny");
});

test("cost follows the policies that select the pod: 10,000 elsewhere leave it one, memoised per pod record", (t) => {
  const many: AuthorizationPolicyRecord[] = [];
  for (let i = 0; i < 10_000; i++) many.push(policy(`p${i}`, { action: "DENY", rules: [{}] }, `ns-${i}`));
  many.push(policy("mine", { selector: { app: "api" }, rules: [{}] }));
  const map = new Map(many.map((p) => [`${p.namespace}/${p.name}`, p]));
  const r = authorizationResolver(map, ROOT);
  t.is(authorizationResolver(map, ROOT), r);
  const applied = r.applied(api);
  t.deepEqual([applied.allow.length, applied.deny.length, applied.custom.length], [1, 0, 0]);
  t.is(r.applied(api), applied);
  t.is(r.decide(api, conn(frontend)).verdict, "allow");
  t.not(authorizationResolver(new Map(map), ROOT), r);
});

test("connectionAttributes: the principal as Istio writes it, the namespace from the verified identity", (t) => {
  t.deepEqual(connectionAttributes(frontend, "10.1.0.5", "10.0.0.9", 80), {
    principal: "cluster.local/ns/production/sa/frontend",
    namespace: "production",
    sourceIp: "10.1.0.5",
    destinationIp: "10.0.0.9",
    destinationPort: 80,
  });
  t.deepEqual(connectionAttributes(undefined, "10.1.0.5", "10.0.0.9", 80).principal, "");
  const d: AuthorizationDecision = decide([], api, connectionAttributes(undefined, "1.2.3.4", "10.0.0.9", 80));
  t.is(d.verdict, "allow");
});
