// Every object the manifests hold, checked against the Kubernetes schema of its kind as `kubectl apply` would check
// it: wrong types, missing required fields and unknown (misspelt) fields fail here rather than on a cluster.
import { join } from "node:path";
import test from "ava";
import { repositoryRoot } from "../../support/repository.js";
import { schemaProblems } from "./kube-schema.js";
import { loadKustomization } from "./manifests.js";

const ROOT = repositoryRoot(import.meta.url);
const KUBERNETES = join(ROOT, "deploy", "kubernetes");

// Keyed by where each object comes from: a file listed by both kustomizations is checked once.
const OBJECTS = new Map(
  [KUBERNETES, join(KUBERNETES, "crds")]
    .flatMap((dir) => loadKustomization(ROOT, dir))
    .map((loaded) => [`${loaded.file} #${loaded.document}`, loaded.object]),
);

for (const [where, object] of OBJECTS) {
  test(`${where} ${object.kind}/${object.metadata.name} is valid for its kind`, (t) => {
    t.deepEqual(schemaProblems(object), []);
  });
}
