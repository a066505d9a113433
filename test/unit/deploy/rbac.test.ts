// The API access the manifests grant, held to an exact list: a new permission (a verb, a resource, a wildcard, a
// Secret) fails here until it is added to the table below on purpose, with the reason in rbac.yaml.
import { join } from "node:path";
import test from "ava";
import { repositoryRoot } from "../../support/repository.js";
import { type KubeObject, loadKustomization, podSpecOf } from "./manifests.js";

const ROOT = repositoryRoot(import.meta.url);
const KUBERNETES = join(ROOT, "deploy", "kubernetes");
const OBJECTS = [...loadKustomization(ROOT, KUBERNETES), ...loadKustomization(ROOT, join(KUBERNETES, "crds"))].map(
  ({ object }) => object,
);

/** One granted permission: "<Role kind>/<name> <verb> <group>/<resource>" (the core group is ""). */
const EXPECTED_PERMISSIONS = [
  // The agent: its cluster view (pods, namespaces, Services, EndpointSlices) and Istio's policies.
  "ClusterRole/ambit-agent get /pods",
  "ClusterRole/ambit-agent list /pods",
  "ClusterRole/ambit-agent watch /pods",
  "ClusterRole/ambit-agent get /namespaces",
  "ClusterRole/ambit-agent list /namespaces",
  "ClusterRole/ambit-agent watch /namespaces",
  "ClusterRole/ambit-agent get /services",
  "ClusterRole/ambit-agent list /services",
  "ClusterRole/ambit-agent watch /services",
  "ClusterRole/ambit-agent get discovery.k8s.io/endpointslices",
  "ClusterRole/ambit-agent list discovery.k8s.io/endpointslices",
  "ClusterRole/ambit-agent watch discovery.k8s.io/endpointslices",
  "ClusterRole/ambit-agent get security.istio.io/peerauthentications",
  "ClusterRole/ambit-agent list security.istio.io/peerauthentications",
  "ClusterRole/ambit-agent watch security.istio.io/peerauthentications",
  "ClusterRole/ambit-agent get security.istio.io/authorizationpolicies",
  "ClusterRole/ambit-agent list security.istio.io/authorizationpolicies",
  "ClusterRole/ambit-agent watch security.istio.io/authorizationpolicies",
  // The CA: which pods run where with which service account, and reviewing agents' tokens.
  "ClusterRole/ambit-ca get /pods",
  "ClusterRole/ambit-ca list /pods",
  "ClusterRole/ambit-ca watch /pods",
  "ClusterRole/ambit-ca create authentication.k8s.io/tokenreviews",
];

/** "<Binding kind>/<name> -> <Role kind>/<name>: <subject>" for every subject. */
const EXPECTED_BINDINGS = [
  "ClusterRoleBinding/ambit-agent -> ClusterRole/ambit-agent: ServiceAccount ambit-system/ambit-agent",
  "ClusterRoleBinding/ambit-ca -> ClusterRole/ambit-ca: ServiceAccount ambit-system/ambit-ca",
];

interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  verbs?: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
}

/** Every (verb, group, resource) a Role or ClusterRole grants, resource names and non-resource URLs spelt out. */
function permissions(role: KubeObject): string[] {
  const who = `${role.kind}/${role.metadata.name}`;
  if (role.aggregationRule !== undefined) return [`${who} aggregates other roles`];
  return ((role.rules ?? []) as PolicyRule[]).flatMap((rule) => {
    const names = rule.resourceNames ? ` named ${rule.resourceNames.join(",")}` : "";
    const urls = (rule.nonResourceURLs ?? []).map((url) => `URL ${url}`);
    const targets = (rule.apiGroups ?? []).flatMap((group) => (rule.resources ?? []).map((r) => `${group}/${r}`));
    return (rule.verbs ?? []).flatMap((verb) =>
      [...targets, ...urls].map((target) => `${who} ${verb} ${target}${names}`),
    );
  });
}

const isRole = (o: KubeObject) => o.apiVersion.startsWith("rbac.authorization.k8s.io/") && o.kind.endsWith("Role");
const isBinding = (o: KubeObject) =>
  o.apiVersion.startsWith("rbac.authorization.k8s.io/") && o.kind.endsWith("RoleBinding");

/** What `actual` has beyond `expected`, and what it lacks; duplicates count. */
function difference(actual: string[], expected: string[]) {
  const without = (from: string[], remove: string[]) => {
    const left = [...from];
    for (const item of remove) {
      const i = left.indexOf(item);
      if (i >= 0) left.splice(i, 1);
    }
    return left;
  };
  return { extra: without(actual, expected), missing: without(expected, actual) };
}

test("the roles grant exactly the permissions in the table", (t) => {
  const granted = OBJECTS.filter(isRole).flatMap(permissions);
  t.true(granted.length > 0);
  t.deepEqual(difference(granted, EXPECTED_PERMISSIONS), { extra: [], missing: [] });
});

test("the table itself grants no wildcard and nothing on Secrets", (t) => {
  for (const permission of EXPECTED_PERMISSIONS) {
    t.false(permission.includes("*"), permission);
    t.false(/\/secrets\b/.test(permission), permission);
  }
});

test("each role is bound to its component's service account only, and each workload runs as that account", (t) => {
  const bindings = OBJECTS.filter(isBinding).flatMap((b) => {
    const ref = b.roleRef as { kind: string; name: string };
    const subjects = (b.subjects ?? []) as { kind: string; name: string; namespace?: string }[];
    return subjects.map(
      (s) => `${b.kind}/${b.metadata.name} -> ${ref.kind}/${ref.name}: ${s.kind} ${s.namespace}/${s.name}`,
    );
  });
  t.deepEqual(difference(bindings, EXPECTED_BINDINGS), { extra: [], missing: [] });

  const accounts = OBJECTS.flatMap((o) => {
    const spec = podSpecOf(o) as { serviceAccountName?: string } | undefined;
    return spec ? [`${o.kind}/${o.metadata.name} ${o.metadata.namespace}/${spec.serviceAccountName}`] : [];
  });
  t.deepEqual(accounts.sort(), [
    "DaemonSet/ambit-agent ambit-system/ambit-agent",
    "Deployment/ambit-ca ambit-system/ambit-ca",
  ]);
  for (const account of ["ambit-agent", "ambit-ca"]) {
    t.true(
      OBJECTS.some(
        (o) => o.kind === "ServiceAccount" && o.metadata.name === account && o.metadata.namespace === "ambit-system",
      ),
      account,
    );
  }
});
