import { CustomResourceDefinition } from "kubernetes-models/apiextensions.k8s.io/v1";
import { DaemonSet, Deployment } from "kubernetes-models/apps/v1";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import { ClusterRole, ClusterRoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1";
import { ConfigMap, Namespace, Service, ServiceAccount } from "kubernetes-models/v1";
import type { KubeObject } from "./manifests.js";

// Checks a manifest object against the Kubernetes OpenAPI schema of its kind, as the API server would on
// `kubectl apply`: kubernetes-models (schemas of Kubernetes 1.27) validates types, enums and required fields, and
// the walk below adds what its schemas leave out, unknown fields (kubectl's default `--validate=strict` refuses
// them; a typo such as `hostPid` would otherwise pass as an unknown, ignored field).

interface Model {
  apiVersion: string;
  kind: string;
  /** Each model types its own data; objects parsed from YAML are checked at run time, hence `never`. */
  new (data: never): { validate(): void };
  prototype: { validate(): void };
}

/**
 * The kinds the manifests (and deploy/README.md's examples) may hold. An object of another kind fails the check
 * until its model is added here.
 */
const MODELS: readonly Model[] = [
  Namespace,
  ServiceAccount,
  Service,
  ConfigMap,
  Deployment,
  DaemonSet,
  ClusterRole,
  ClusterRoleBinding,
  CustomResourceDefinition,
  NetworkPolicy,
];

/** What is wrong with `object` against its kind's schema, one line per problem; empty when it is valid. */
export function schemaProblems(object: KubeObject): string[] {
  const model = MODELS.find((m) => m.apiVersion === object.apiVersion && m.kind === object.kind);
  if (!model) return [`no schema for ${object.apiVersion} ${object.kind}: add its model to kube-schema.ts`];
  const problems = validationErrors(() => new model(object as never).validate());
  // The validator reads every field its schema names, and every entry of a map; what it never reads is unknown.
  const reads = new Map<string, { keys: string[]; read: Set<string> }>();
  const tracked = trackReads(object, "", reads);
  validationErrors(() => model.prototype.validate.call(tracked));
  for (const [path, { keys, read }] of reads) {
    for (const key of keys) {
      if (!read.has(key) && !notCovered(path, key)) problems.push(`${path}/${key}: unknown field`);
    }
  }
  return problems;
}

// Where the package's schemas fall short, so that an unread field there is not evidence of a typo. Its generator
// drops every property named `description` (CustomResourceColumnDefinition's, JSONSchemaProps') and every
// `x-kubernetes-*` one, and leaves a JSONSchemaProps' items and additionalProperties untyped: a CRD's
// openAPIV3Schema is checked by crd-schema.ts (structuralProblems, a closed set of keywords) instead.
const CRD_SCHEMA = /^\/spec\/versions\/\d+\/schema\/openAPIV3Schema(\/|$)/;

function notCovered(path: string, key: string): boolean {
  return key === "description" || CRD_SCHEMA.test(path);
}

function validationErrors(run: () => void): string[] {
  try {
    run();
    return [];
  } catch (err) {
    const errors = (err as { errors?: { instancePath: string; message?: string }[] }).errors;
    if (!errors) throw err;
    return errors.map((e) => `${e.instancePath || "/"}: ${e.message ?? "invalid"}`);
  }
}

/** A copy of `value` whose objects record, under their JSON pointer in `reads`, which of their keys were read. */
function trackReads(value: unknown, path: string, reads: Map<string, { keys: string[]; read: Set<string> }>): unknown {
  if (Array.isArray(value)) return value.map((item, i) => trackReads(item, `${path}/${i}`, reads));
  if (typeof value !== "object" || value === null) return value;
  const read = new Set<string>();
  reads.set(path, { keys: Object.keys(value), read });
  const copy = Object.fromEntries(
    Object.entries(value).map(([key, item]) => [key, trackReads(item, `${path}/${key}`, reads)]),
  );
  return new Proxy(copy, {
    get(target, key, receiver) {
      if (typeof key === "string") read.add(key);
      return Reflect.get(target, key, receiver);
    },
  });
}
