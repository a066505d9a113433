// deploy/kubernetes/crds: Istio's PeerAuthentication and AuthorizationPolicy CRDs for clusters without Istio. They
// must be replaceable in place by Istio's own (same identity and versions), accept every object Istio's accept
// without pruning a field of it, and refuse what the agent could not read.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import test from "ava";
import { convertAuthorizationPolicy, convertPeerAuthentication } from "../../../agent/kube/convert-istio.js";
import { repositoryRoot } from "../../support/repository.js";
import { type JsonSchema, objectProblems, structuralProblems } from "./crd-schema.js";
import { type KubeObject, loadKustomization, parseYamlDocuments } from "./manifests.js";

const ROOT = repositoryRoot(import.meta.url);
const KUBERNETES = join(ROOT, "deploy", "kubernetes");
const CRDS = loadKustomization(ROOT, join(KUBERNETES, "crds")).map(({ object }) => object);
const README = join(ROOT, "deploy", "README.md");

interface CrdVersion {
  name: string;
  served: boolean;
  storage: boolean;
  schema: { openAPIV3Schema: JsonSchema };
}
interface CrdSpec {
  group: string;
  scope: string;
  names: Record<string, unknown>;
  versions: CrdVersion[];
}

// Istio's CRDs as manifests/charts/base/files/crd-all.gen.yaml defines them (Istio 1.28 and later; 1.22 to 1.27
// differ only in storing v1beta1). Anything here that differed from Istio's would make installing Istio over ours
// fail or change what existing objects are.
const ISTIO = {
  "peerauthentications.security.istio.io": {
    group: "security.istio.io",
    scope: "Namespaced",
    names: {
      kind: "PeerAuthentication",
      listKind: "PeerAuthenticationList",
      plural: "peerauthentications",
      singular: "peerauthentication",
      shortNames: ["pa"],
      categories: ["istio-io", "security-istio-io"],
    },
    versions: ["v1 served stored", "v1beta1 served"],
  },
  "authorizationpolicies.security.istio.io": {
    group: "security.istio.io",
    scope: "Namespaced",
    names: {
      kind: "AuthorizationPolicy",
      listKind: "AuthorizationPolicyList",
      plural: "authorizationpolicies",
      singular: "authorizationpolicy",
      shortNames: ["ap"],
      categories: ["istio-io", "security-istio-io"],
    },
    versions: ["v1 served stored", "v1beta1 served"],
  },
};

function crd(name: string): CrdSpec {
  const found = CRDS.find((o) => o.kind === "CustomResourceDefinition" && o.metadata.name === name);
  if (!found) throw new Error(`deploy/kubernetes/crds has no CustomResourceDefinition ${name}`);
  return found.spec as CrdSpec;
}

/** The schema a custom object of `apiVersion` and `kind` is checked against. */
function schemaFor(apiVersion: string, kind: string): JsonSchema {
  const [group, version] = apiVersion.split("/");
  const spec = CRDS.map((o) => o.spec as CrdSpec).find((s) => s.group === group && s.names.kind === kind);
  const schema = spec?.versions.find((v) => v.name === version && v.served)?.schema.openAPIV3Schema;
  if (!schema) throw new Error(`no served CRD version for ${apiVersion} ${kind}`);
  return schema;
}

/** What the API server would refuse or prune in a custom object (apiVersion, kind and metadata are its own). */
function problemsOf(object: KubeObject) {
  const { apiVersion, kind, metadata: _metadata, ...body } = object;
  return objectProblems(schemaFor(apiVersion, kind), body);
}

const pa = (spec: unknown, apiVersion = "security.istio.io/v1"): KubeObject => ({
  apiVersion,
  kind: "PeerAuthentication",
  metadata: { name: "p", namespace: "shop" },
  spec,
});
const ap = (spec: unknown, apiVersion = "security.istio.io/v1"): KubeObject => ({
  apiVersion,
  kind: "AuthorizationPolicy",
  metadata: { name: "a", namespace: "shop" },
  spec,
});

test("crds/ holds exactly Istio's PeerAuthentication and AuthorizationPolicy, with Istio's names and versions", (t) => {
  t.deepEqual(CRDS.map((o) => `${o.kind}/${o.metadata.name}`).sort(), [
    "CustomResourceDefinition/authorizationpolicies.security.istio.io",
    "CustomResourceDefinition/peerauthentications.security.istio.io",
  ]);
  for (const [name, istio] of Object.entries(ISTIO)) {
    const spec = crd(name);
    t.is(name, `${spec.names.plural}.${spec.group}`);
    t.deepEqual(
      {
        group: spec.group,
        scope: spec.scope,
        names: spec.names,
        versions: spec.versions.map((v) => `${v.name}${v.served ? " served" : ""}${v.storage ? " stored" : ""}`),
      },
      istio,
      name,
    );
  }
});

test("the main kustomization installs no CRD: a cluster with Istio keeps Istio's", (t) => {
  const main = loadKustomization(ROOT, KUBERNETES).map(({ object }) => object.kind);
  t.true(main.length > 0);
  t.false(main.includes("CustomResourceDefinition"));
});

test("each CRD's schemas are structural, and v1 and v1beta1 are the same schema (no conversion between them)", (t) => {
  for (const name of Object.keys(ISTIO)) {
    const [v1, ...others] = crd(name).versions;
    t.truthy(v1);
    for (const version of crd(name).versions) {
      t.deepEqual(structuralProblems(version.schema.openAPIV3Schema), [], `${name} ${version.name}`);
    }
    for (const other of others) t.deepEqual(other.schema, v1?.schema, `${name} ${other.name}`);
  }
});

test("PeerAuthentications that Istio accepts are accepted whole, v1 and v1beta1", (t) => {
  const valid = [
    {},
    { mtls: { mode: "STRICT" } },
    { mtls: {} },
    { selector: { matchLabels: { app: "web" } }, mtls: { mode: "PERMISSIVE" } },
    {
      selector: { matchLabels: { app: "web", "app.kubernetes.io/version": "v2" } },
      mtls: { mode: "UNSET" },
      portLevelMtls: { "8080": { mode: "DISABLE" }, "9090": {} },
    },
  ];
  for (const spec of valid) {
    for (const version of ["security.istio.io/v1", "security.istio.io/v1beta1"]) {
      t.deepEqual(problemsOf(pa(spec, version)), { invalid: [], pruned: [] }, JSON.stringify(spec));
    }
  }
  // Status is Istio's to write (analyzers); kept as given.
  const withStatus = { ...pa({}), status: { conditions: [{ type: "Reconciled" }], validationMessages: [] } };
  t.deepEqual(problemsOf(withStatus), { invalid: [], pruned: [] });
});

test("PeerAuthentications the agent could not read are refused, and unknown fields are pruned as in Istio's", (t) => {
  const invalid = (spec: unknown) => problemsOf(pa(spec)).invalid;
  t.deepEqual(invalid({ mtls: { mode: "STRICTLY" } }), [
    '/spec/mtls/mode: "STRICTLY" is not one of UNSET, DISABLE, PERMISSIVE, STRICT',
  ]);
  t.deepEqual(invalid({ mtls: "STRICT" }), ['/spec/mtls: must be object, got "STRICT"']);
  t.deepEqual(invalid({ portLevelMtls: { "8080": { mode: "strict" } } }), [
    '/spec/portLevelMtls/8080/mode: "strict" is not one of UNSET, DISABLE, PERMISSIVE, STRICT',
  ]);
  t.deepEqual(invalid({ portLevelMtls: {} }), ["/spec/portLevelMtls: fewer than 1 properties"]);
  t.deepEqual(invalid({ selector: { matchLabels: { app: 7 } } }), [
    "/spec/selector/matchLabels/app: must be string, got 7",
  ]);
  t.deepEqual(invalid({ selector: { matchLabels: { app: "x".repeat(64) } } }), [
    "/spec/selector/matchLabels/app: longer than 63",
  ]);
  // Istio's schema has no field beyond these either: a misspelt one disappears (kubectl refuses it as unknown).
  t.deepEqual(problemsOf(pa({ mtsl: { mode: "STRICT" } })).pruned, ["/spec/mtsl"]);
});

test("AuthorizationPolicies that Istio accepts keep every field: rules, provider and targetRefs are preserved", (t) => {
  const full = {
    selector: { matchLabels: { app: "backend" } },
    action: "DENY",
    rules: [
      {
        from: [{ source: { principals: ["cluster.local/ns/shop/sa/web"], notNamespaces: ["dev"] } }],
        to: [{ operation: { ports: ["8080"], methods: ["GET"] } }],
        when: [{ key: "source.ip", values: ["10.0.0.0/8"] }],
      },
      {},
    ],
  };
  const others = [
    {},
    { action: "ALLOW" },
    { rules: [] },
    { action: "CUSTOM", provider: { name: "ext-authz" }, rules: [{ to: [{ operation: { paths: ["/admin"] } }] }] },
    { targetRefs: [{ kind: "Service", group: "", name: "backend" }], action: "AUDIT", rules: [{}] },
  ];
  for (const spec of [full, ...others]) {
    for (const version of ["security.istio.io/v1", "security.istio.io/v1beta1"]) {
      t.deepEqual(problemsOf(ap(spec, version)), { invalid: [], pruned: [] }, JSON.stringify(spec));
    }
  }
});

test("AuthorizationPolicies the agent could not read are refused", (t) => {
  const invalid = (spec: unknown) => problemsOf(ap(spec)).invalid;
  t.deepEqual(invalid({ action: "REJECT" }), ['/spec/action: "REJECT" is not one of ALLOW, DENY, AUDIT, CUSTOM']);
  t.deepEqual(invalid({ rules: { from: [] } }), ['/spec/rules: must be array, got {"from":[]}']);
  t.deepEqual(invalid({ rules: ["all"] }), ['/spec/rules/0: must be object, got "all"']);
  t.deepEqual(invalid({ selector: { matchLabels: ["app"] } }), [
    '/spec/selector/matchLabels: must be object, got ["app"]',
  ]);
});

test("the policy examples in deploy/README.md are valid under these CRDs and read by the agent as written", (t) => {
  const blocks = [...readFileSync(README, "utf8").matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1] ?? "");
  const examples = blocks
    .flatMap((block, i) => parseYamlDocuments(block, `deploy/README.md yaml block ${i}`))
    .map((value) => value as KubeObject)
    .filter((o) => o.apiVersion?.startsWith("security.istio.io/"));
  const modes = examples.map((o) => {
    t.deepEqual(problemsOf(o), { invalid: [], pruned: [] }, `${o.kind} ${o.metadata.name}`);
    const converted = o.kind === "PeerAuthentication" ? convertPeerAuthentication(o) : convertAuthorizationPolicy(o);
    if ("problem" in converted) return t.fail(converted.problem);
    return "mtls" in converted.record
      ? `${o.metadata.namespace} ${converted.record.selector ? "workload" : "namespace"} ${converted.record.mtls}`
      : `${o.metadata.namespace} ${converted.record.action}`;
  });
  // The README shows a namespace-wide STRICT and a workload DISABLE.
  t.true(
    modes.some((m) => m?.endsWith(" namespace STRICT")),
    `${modes}`,
  );
  t.true(
    modes.some((m) => m?.endsWith(" workload DISABLE")),
    `${modes}`,
  );
});
