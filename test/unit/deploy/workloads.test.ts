// The agent and the CA learn the cluster from the API server (--kube) with their service-account tokens; nothing
// of the JSON pod file they used before (--pod-file, the ambit-pods ConfigMap) is left, and the agent mounts no host
// path: it finds pods' network namespaces through /proc (hostPID).
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import test from "ava";
import { repositoryRoot } from "../../support/repository.js";
import { loadKustomization, podSpecOf } from "./manifests.js";
import type { PodSpec } from "./pod-references.js";

const ROOT = repositoryRoot(import.meta.url);
const DEPLOY = join(ROOT, "deploy");
const KUBERNETES = join(DEPLOY, "kubernetes");
const OBJECTS = loadKustomization(ROOT, KUBERNETES).map(({ object }) => object);

/** Pod-source flags other than --kube: a kubeconfig or local manifests (not for clusters), or the old pod file. */
const OTHER_SOURCES = ["--kubeconfig", "--manifests", "--pod-file"];

function container(kind: string, name: string, containerName: string) {
  const object = OBJECTS.find((o) => o.kind === kind && o.metadata.name === name);
  const spec = object && (podSpecOf(object) as (PodSpec & Record<string, unknown>) | undefined);
  const found = spec?.containers.find((c) => c.name === containerName);
  if (!spec || !found) throw new Error(`deploy/kubernetes has no container ${containerName} in ${kind}/${name}`);
  return { spec, container: found };
}

const WORKLOADS = [
  { kind: "DaemonSet", name: "ambit-agent", container: "agent", command: "agent" },
  { kind: "Deployment", name: "ambit-ca", container: "ca", command: "ca" },
];

for (const w of WORKLOADS) {
  test(`${w.kind}/${w.name} runs \`ambit ${w.command} --kube\` with its service-account token mounted`, (t) => {
    const { spec, container: c } = container(w.kind, w.name, w.container);
    const args = c.args ?? [];
    t.is(args[0], w.command);
    t.is(args.filter((a) => a === "--kube").length, 1);
    t.deepEqual(
      args.filter((a) => OTHER_SOURCES.some((flag) => a === flag || a.startsWith(`${flag}=`))),
      [],
    );
    // --kube authenticates with the token the kubelet mounts; the pod says so whatever its service account says.
    t.is(spec.automountServiceAccountToken, true);
  });
}

test("the agent mounts no host path (pods' namespaces are found through /proc, with hostPID)", (t) => {
  const { spec } = container("DaemonSet", "ambit-agent", "agent");
  t.true(spec.hostPID);
  t.deepEqual(
    (spec.volumes ?? []).filter((v) => v.hostPath !== undefined).map((v) => v.name),
    [],
  );
});

test("nothing in deploy/ mentions the pod file (--pod-file) or its ConfigMap (ambit-pods)", (t) => {
  const files = readdirSync(DEPLOY, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
  t.true(files.length > 0);
  for (const entry of files) {
    const path = join(entry.parentPath ?? entry.path, entry.name);
    const text = readFileSync(path, "utf8");
    for (const word of ["--pod-file", "ambit-pods", "pods-configmap", "AMBIT_POD_FILE"]) {
      t.false(text.includes(word), `${relative(ROOT, path)} mentions ${word}`);
    }
  }
});
