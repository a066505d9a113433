// Every object the manifests hold, checked against the Kubernetes schema of its kind as `kubectl apply` would check
// it: wrong types, missing required fields and unknown (misspelt) fields fail here rather than on a cluster.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import test from "ava";
import { repositoryRoot } from "../../support/repository.js";
import { schemaProblems } from "./kube-schema.js";
import { type KubeObject, loadKustomization, parseYamlDocuments } from "./manifests.js";

const ROOT = repositoryRoot(import.meta.url);
const KUBERNETES = join(ROOT, "deploy", "kubernetes");

// Keyed by where each object comes from: a file listed by both kustomizations is checked once.
const OBJECTS = new Map(
  [KUBERNETES, join(KUBERNETES, "crds"), join(KUBERNETES, "cni-uninstall")]
    .flatMap((dir) => loadKustomization(ROOT, dir))
    .map((loaded) => [`${loaded.file} #${loaded.document}`, loaded.object]),
);

for (const [where, object] of OBJECTS) {
  test(`${where} ${object.kind}/${object.metadata.name} is valid for its kind`, (t) => {
    t.deepEqual(schemaProblems(object), []);
  });
}

test("the Kubernetes objects in deploy/README.md's examples are valid for their kind", (t) => {
  const text = readFileSync(join(ROOT, "deploy", "README.md"), "utf8");
  const objects = [...text.matchAll(/```yaml\n([\s\S]*?)```/g)]
    .flatMap((m, i) => parseYamlDocuments(m[1] ?? "", `deploy/README.md yaml block ${i}`))
    .map((value) => value as KubeObject)
    // Istio's kinds are checked against ambit's CRDs in istio-crds.test.ts.
    .filter((o) => !o.apiVersion.startsWith("security.istio.io/"));
  t.true(objects.some((o) => o.kind === "NetworkPolicy"));
  for (const object of objects) t.deepEqual(schemaProblems(object), [], `${object.kind}/${object.metadata.name}`);
});
