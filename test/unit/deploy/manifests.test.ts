// The Kubernetes manifests keep the CA's root key on the CA's node only. The node authorizer lets a node's kubelet
// read any Secret referenced by a pod on that node, whole (`items` limits only what is mounted), so a Secret that
// the agent DaemonSet references is readable by every node.
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import test from "ava";
import { repositoryRoot } from "../../support/repository.js";
import { type KubeObject, type LoadedObject, loadKustomization, podSpecOf } from "./manifests.js";
import { mountedFileSource, type PodReference, podSpecReferences } from "./pod-references.js";

const ROOT = repositoryRoot(import.meta.url);
const DEPLOY = join(ROOT, "deploy");
const KUBERNETES = join(DEPLOY, "kubernetes");
const LOADED = loadKustomization(ROOT, KUBERNETES);

const NAMESPACE = "ambit-system";
const ROOT_SECRET = "ambit-ca-root";
const BUNDLE_CONFIGMAP = "ambit-ca-bundle";

const PEM_PRIVATE_KEY = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/;
/** Data entries named like a key file: tls.key, ca.key, ssh-privatekey, private_key... */
const KEY_LIKE_NAME = /(^|[._-])key$|private[._-]?key/i;

const namespaceOf = (object: KubeObject) => object.metadata.namespace ?? "default";
type SecretReference = Extract<PodReference, { kind: "Secret" }>;
type ConfigMapReference = Extract<PodReference, { kind: "ConfigMap" }>;

const nameOf = ({ object }: LoadedObject) => `${object.kind}/${object.metadata.name}`;

/** Every string in `value`, at any depth, with base64 `data` of Secrets and `binaryData` of ConfigMaps decoded. */
function stringsOf(object: KubeObject): string[] {
  const strings: string[] = [];
  const walk = (value: unknown): void => {
    if (typeof value === "string") strings.push(value);
    else if (Array.isArray(value)) value.forEach(walk);
    else if (typeof value === "object" && value !== null) Object.values(value).forEach(walk);
  };
  walk(object);
  const encoded = object.kind === "Secret" ? object.data : object.kind === "ConfigMap" ? object.binaryData : undefined;
  for (const value of Object.values((encoded ?? {}) as Record<string, unknown>)) {
    if (typeof value === "string") strings.push(Buffer.from(value, "base64").toString("latin1"));
  }
  return strings;
}

/** What in `object` looks like a private key: PEM blocks anywhere, and data entries named like key files. */
function privateKeyFindings(object: KubeObject): string[] {
  const findings = stringsOf(object)
    .filter((s) => PEM_PRIVATE_KEY.test(s))
    .map((s) => `PEM private key ${s.match(PEM_PRIVATE_KEY)?.[0]}`);
  for (const field of ["data", "stringData", "binaryData"]) {
    for (const name of Object.keys((object[field] ?? {}) as Record<string, unknown>)) {
      if (KEY_LIKE_NAME.test(name)) findings.push(`${field} entry "${name}"`);
    }
  }
  return findings;
}

/** The value of `--flag=value` or `--flag value` in a container's args. */
function flagValue(args: string[] | undefined, flag: string): string | undefined {
  for (const [i, arg] of (args ?? []).entries()) {
    if (arg.startsWith(`${flag}=`)) return arg.slice(flag.length + 1);
    if (arg === flag) return args?.[i + 1];
  }
  return undefined;
}

function workload(kind: string, name: string) {
  const found = LOADED.find(({ object }) => object.kind === kind && object.metadata.name === name);
  if (!found) throw new Error(`deploy/kubernetes has no ${kind}/${name}`);
  const spec = podSpecOf(found.object);
  if (!spec) throw new Error(`${kind}/${name} has no pod template`);
  return { ...found, spec };
}

const defined = (kind: string, name: string, namespace: string) =>
  LOADED.find(
    ({ object }) => object.kind === kind && object.metadata.name === name && namespaceOf(object) === namespace,
  );

test("every manifest in deploy/kubernetes is listed in a kustomization, so the checks below see all objects", (t) => {
  // The CRDs and the CNI uninstall have their own kustomizations, which the main one leaves out; the tests load all.
  const others = ["crds", "cni-uninstall"].flatMap((dir) => loadKustomization(ROOT, join(KUBERNETES, dir)));
  const listed = new Set([...LOADED, ...others].map(({ file }) => file));
  const files = readdirSync(KUBERNETES, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && /\.ya?ml$/.test(e.name) && e.name !== "kustomization.yaml")
    .map((e) => relative(ROOT, join(e.parentPath ?? e.path, e.name)));
  t.true(files.length > 0);
  t.deepEqual(
    files.filter((f) => !listed.has(f)),
    [],
  );
  t.truthy(defined("DaemonSet", "ambit-agent", NAMESPACE));
  t.truthy(defined("Deployment", "ambit-ca", NAMESPACE));
});

test("no file committed in deploy/ holds a PEM private key", (t) => {
  const files = readdirSync(DEPLOY, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
  t.true(files.length > 0);
  for (const entry of files) {
    const path = join(entry.parentPath ?? entry.path, entry.name);
    t.false(PEM_PRIVATE_KEY.test(readFileSync(path, "latin1")), `${relative(ROOT, path)} holds a private key`);
  }
});

test("no object in the manifests holds a private key or a data entry named like one", (t) => {
  t.true(LOADED.length > 0);
  for (const loaded of LOADED) {
    t.deepEqual(privateKeyFindings(loaded.object), [], `${loaded.file}: ${nameOf(loaded)}`);
  }
});

test("no DaemonSet references a Secret, and the ConfigMaps it references hold no private key", (t) => {
  const daemonSets = LOADED.filter(({ object }) => object.kind === "DaemonSet");
  t.true(daemonSets.some(({ object }) => object.metadata.name === "ambit-agent"));
  for (const loaded of daemonSets) {
    const spec = podSpecOf(loaded.object);
    if (!spec) throw new Error(`${nameOf(loaded)} has no pod template`);
    const refs = podSpecReferences(spec);
    // Image pull Secrets are registry credentials; acceptable as long as none of them is, or holds, a key.
    const secrets = refs.filter((r) => r.kind === "Secret" && r.use !== "imagePull");
    t.deepEqual(secrets, [], `${nameOf(loaded)} references a Secret, readable whole by every node's kubelet`);
    const pulls = refs.filter((r): r is SecretReference => r.kind === "Secret" && r.use === "imagePull");
    for (const pull of pulls) {
      t.not(pull.name, ROOT_SECRET, `${nameOf(loaded)} pulls images with the CA's root Secret`);
      const object = defined("Secret", pull.name, namespaceOf(loaded.object))?.object;
      if (object) t.deepEqual(privateKeyFindings(object), [], `image pull Secret ${pull.name}`);
    }
    for (const ref of refs.filter((r): r is ConfigMapReference => r.kind === "ConfigMap")) {
      const object = defined("ConfigMap", ref.name, namespaceOf(loaded.object))?.object;
      if (object) t.deepEqual(privateKeyFindings(object), [], `ConfigMap ${ref.name} (${ref.at})`);
    }
  }
});

test(`the Secret ${ROOT_SECRET} is referenced by the CA Deployment and by no other workload`, (t) => {
  const referencing = LOADED.filter(({ object }) => {
    const spec = podSpecOf(object);
    return (
      spec !== undefined &&
      namespaceOf(object) === NAMESPACE &&
      podSpecReferences(spec).some((r) => r.kind === "Secret" && r.name === ROOT_SECRET)
    );
  }).map(nameOf);
  t.deepEqual(referencing, ["Deployment/ambit-ca"]);

  // And the CA still reads its root from there.
  const ca = workload("Deployment", "ambit-ca");
  const args = ca.spec.containers.find((c) => c.name === "ca")?.args;
  const file = (flag: string) => mountedFileSource(ca.spec, "ca", flagValue(args, flag) ?? "");
  t.deepEqual(file("--ca-cert"), { kind: "Secret", name: ROOT_SECRET, key: "tls.crt" });
  t.deepEqual(file("--ca-key"), { kind: "Secret", name: ROOT_SECRET, key: "tls.key" });
});

test(`the agent reads --ca-bundle from the ConfigMap ${BUNDLE_CONFIGMAP} and --ca-token-file from its own token`, (t) => {
  const agent = workload("DaemonSet", "ambit-agent");
  const args = agent.spec.containers.find((c) => c.name === "agent")?.args;
  const bundle = flagValue(args, "--ca-bundle");
  t.truthy(bundle);
  t.deepEqual(mountedFileSource(agent.spec, "agent", bundle ?? ""), {
    kind: "ConfigMap",
    name: BUNDLE_CONFIGMAP,
    key: "ca.crt",
  });
  // A projected service-account token is not a Secret object: the CA checks it by TokenReview.
  t.deepEqual(mountedFileSource(agent.spec, "agent", flagValue(args, "--ca-token-file") ?? ""), {
    kind: "ServiceAccountToken",
    audience: "ambit-ca",
  });
});
