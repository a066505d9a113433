import test from "ava";
import { schemaProblems } from "./kube-schema.js";
import type { KubeObject } from "./manifests.js";

const daemonSet = (podSpec: Record<string, unknown>) =>
  ({
    apiVersion: "apps/v1",
    kind: "DaemonSet",
    metadata: { name: "d", namespace: "n", labels: { app: "d" } },
    spec: {
      selector: { matchLabels: { app: "d" } },
      template: {
        metadata: { labels: { app: "d" } },
        spec: { containers: [{ name: "c", image: "i", resources: { requests: { cpu: "100m" } } }], ...podSpec },
      },
    },
  }) as KubeObject;

test("a valid object has no problems: known fields, map entries (labels, resources) and all", (t) => {
  t.deepEqual(schemaProblems(daemonSet({ hostPID: true })), []);
});

test("a misspelt field is unknown, at any depth", (t) => {
  t.deepEqual(schemaProblems(daemonSet({ hostPid: true })), ["/spec/template/spec/hostPid: unknown field"]);
  const port = daemonSet({ containers: [{ name: "c", image: "i", ports: [{ containerPort: 1, protocl: "TCP" }] }] });
  t.deepEqual(schemaProblems(port), ["/spec/template/spec/containers/0/ports/0/protocl: unknown field"]);
  t.deepEqual(schemaProblems({ ...daemonSet({}), metdata: {} }), ["/metdata: unknown field"]);
});

test("wrong types, values outside an enum and missing required fields are reported with where they are", (t) => {
  t.deepEqual(schemaProblems(daemonSet({ hostPID: "yes" })), ["/spec/template/spec/hostPID: must be boolean"]);
  const noImage = daemonSet({ containers: [{ image: "i" }] });
  t.deepEqual(schemaProblems(noImage), ["/spec/template/spec/containers/0: must have required property name"]);
  const role: KubeObject = {
    apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "ClusterRole",
    metadata: { name: "r" },
    rules: [{ apiGroups: [""], resources: ["pods"], verb: ["get"] }],
  };
  t.deepEqual(schemaProblems(role), ["/rules/0: must have required property verbs", "/rules/0/verb: unknown field"]);
});

test("a kind without a model is a problem, not a pass", (t) => {
  const object = { apiVersion: "policy/v1", kind: "PodDisruptionBudget", metadata: { name: "p" } };
  t.deepEqual(schemaProblems(object), ["no schema for policy/v1 PodDisruptionBudget: add its model to kube-schema.ts"]);
});

test("a CRD's openAPIV3Schema and `description` fields are left to crd-schema.ts (the package drops them)", (t) => {
  const crd: KubeObject = {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: "things.example.com" },
    spec: {
      group: "example.com",
      scope: "Namespaced",
      names: { kind: "Thing", plural: "things" },
      versions: [
        {
          name: "v1",
          served: true,
          storage: true,
          additionalPrinterColumns: [{ name: "A", type: "string", jsonPath: ".a", description: "a" }],
          schema: { openAPIV3Schema: { type: "object", "x-kubernetes-preserve-unknown-fields": true } },
        },
      ],
    },
  };
  t.deepEqual(schemaProblems(crd), []);
  const versions = (crd.spec as { versions: Record<string, unknown>[] }).versions;
  t.deepEqual(
    schemaProblems({ ...crd, spec: { ...(crd.spec as object), versions: [{ ...versions[0], servd: true }] } }),
    ["/spec/versions/0/servd: unknown field"],
  );
});
