import { readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { parseAllDocuments } from "yaml";
import type { PodSpec } from "./pod-references.js";

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [field: string]: unknown;
}

/** An object of a manifest, with the file (relative to the repository root) and document it came from. */
export interface LoadedObject {
  file: string;
  document: number;
  object: KubeObject;
}

// kubectl reads manifests as YAML 1.1 (sigs.k8s.io/yaml over go-yaml): `defaultMode: 0440` in ca.yaml is octal
// (288) there, and would be the decimal 440 under YAML 1.2.
const KUBE_YAML = { version: "1.1", prettyErrors: true } as const;

/** Every document of a (multi-document) YAML text; empty documents (comments only) are skipped. */
export function parseYamlDocuments(text: string, file: string): unknown[] {
  const values: unknown[] = [];
  for (const [i, doc] of parseAllDocuments(text, KUBE_YAML).entries()) {
    const problem = doc.errors[0] ?? doc.warnings[0];
    if (problem) throw new Error(`${file}, document ${i}: ${problem.message}`);
    const value = doc.toJS();
    if (value !== null && value !== undefined) values.push(value);
  }
  return values;
}

// The fields of a Kustomization this loader understands. Any other (patches, generators, namespace, components...)
// could add or change objects the tests would then not see, so it stops the load until the loader learns it.
const KUSTOMIZATION_FIELDS = new Set(["apiVersion", "kind", "resources", "images"]);

/**
 * The objects `kustomize build` would start from: every document of every file in `resources`, following resource
 * directories that hold their own kustomization.yaml. `images` only rewrites image names, which no test reads.
 */
export function loadKustomization(root: string, dir: string): LoadedObject[] {
  const file = join(dir, "kustomization.yaml");
  const [kustomization] = parseYamlDocuments(readFileSync(file, "utf8"), relative(root, file)) as {
    resources?: string[];
  }[];
  if (!kustomization) throw new Error(`${relative(root, file)} is empty`);
  const unknown = Object.keys(kustomization).filter((field) => !KUSTOMIZATION_FIELDS.has(field));
  if (unknown.length > 0) throw new Error(`${relative(root, file)}: the manifest loader does not handle ${unknown}`);

  const loaded: LoadedObject[] = [];
  for (const resource of kustomization.resources ?? []) {
    const path = join(dir, resource);
    if (statSync(path).isDirectory()) {
      loaded.push(...loadKustomization(root, path));
      continue;
    }
    const name = relative(root, path);
    for (const [document, value] of parseYamlDocuments(readFileSync(path, "utf8"), name).entries()) {
      loaded.push({ file: name, document, object: asKubeObject(value, `${name}, document ${document}`) });
    }
  }
  return loaded;
}

function asKubeObject(value: unknown, where: string): KubeObject {
  const object = value as Partial<KubeObject> | null;
  if (
    typeof object !== "object" ||
    object === null ||
    typeof object.apiVersion !== "string" ||
    typeof object.kind !== "string" ||
    typeof object.metadata?.name !== "string"
  ) {
    throw new Error(`${where} is not a Kubernetes object (apiVersion, kind and metadata.name)`);
  }
  return object as KubeObject;
}

/** The pod template of a workload (or the spec of a bare Pod); undefined for objects that run no pods. */
export function podSpecOf(object: KubeObject): PodSpec | undefined {
  type Template = { template?: { spec?: PodSpec } };
  const spec = object.spec as (Template & { jobTemplate?: { spec?: Template } }) | undefined;
  switch (object.kind) {
    case "Pod":
      return object.spec as PodSpec | undefined;
    case "Deployment":
    case "DaemonSet":
    case "StatefulSet":
    case "ReplicaSet":
    case "ReplicationController":
    case "Job":
      return spec?.template?.spec;
    case "CronJob":
      return spec?.jobTemplate?.spec?.template?.spec;
    default:
      return undefined;
  }
}
