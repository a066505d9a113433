// The agent and the CA learn the cluster from the API server (--kube) with their service-account tokens; nothing
// of the JSON pod file they used before (--pod-file, the ambit-pods ConfigMap) is left, and the agent mounts no host
// path but the CNI socket's directory and sandboxes' namespaces: running pods' namespaces are found through /proc
// (hostPID).
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import test from "ava";
import { repositoryRoot } from "../../support/repository.js";
import { loadKustomization, podSpecOf } from "./manifests.js";
import type { PodSpec } from "./pod-references.js";

const ROOT = repositoryRoot(import.meta.url);
const DEPLOY = join(ROOT, "deploy");
const KUBERNETES = join(DEPLOY, "kubernetes");
const OBJECTS = [KUBERNETES, join(KUBERNETES, "cni-uninstall")].flatMap((dir) =>
  loadKustomization(ROOT, dir).map(({ object }) => object),
);

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

test("the agent mounts two host paths: the CNI socket's directory, and sandboxes' namespaces read-only", (t) => {
  const { spec, container: c } = container("DaemonSet", "ambit-agent", "agent");
  t.true(spec.hostPID);
  // The pod's other host paths (the CNI dirs) are the install-cni container's, below.
  const mounted = new Set((c.volumeMounts ?? []).map((m) => m.name));
  const hostPaths = (spec.volumes ?? []).filter((v) => v.hostPath !== undefined && mounted.has(v.name));
  t.deepEqual(
    hostPaths.map((v) => (v.hostPath as { path: string }).path),
    ["/var/run/ambit", "/var/run/netns"],
  );
  const mounts = (c.volumeMounts ?? []) as Array<{ name: string; mountPath: string; readOnly?: boolean }>;
  const netns = mounts.find((m) => m.name === hostPaths[1]?.name);
  t.is(netns?.readOnly, true);
  const socketDir = mounts.find((m) => m.name === hostPaths[0]?.name)?.mountPath;
  t.true((c.args ?? []).includes(`--cni-socket=${socketDir}/cni.sock`), "the socket is in the shared directory");
});

test("upgrades surge: the new agent starts beside the old one, so the pod declares no hostPort", (t) => {
  const object = OBJECTS.find((o) => o.kind === "DaemonSet" && o.metadata.name === "ambit-agent");
  const strategy = (object as unknown as { spec: { updateStrategy: unknown } }).spec.updateStrategy;
  t.deepEqual(strategy, { type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
  const { spec, container: c } = container("DaemonSet", "ambit-agent", "agent");
  t.true(spec.hostNetwork, "with hostNetwork every containerPort would be a hostPort");
  t.is((c as unknown as Record<string, unknown>).ports, undefined);
  t.true((c.args ?? []).includes("--wait-for-ports"), "the new agent waits for the node's ports, not fails");
});

test("the agent's drain fits its grace period: AMBIT_GRACE_SECONDS is terminationGracePeriodSeconds", (t) => {
  const { spec, container: c } = container("DaemonSet", "ambit-agent", "agent");
  const env = (c.env ?? []) as Array<{ name: string; value?: string }>;
  const grace = env.find((e) => e.name === "AMBIT_GRACE_SECONDS")?.value;
  const period = Number(spec.terminationGracePeriodSeconds);
  t.is(Number(grace), period);
  t.true(period > 3, "room for a drain after the 3 s margin");
});

test("the kubelet probes this agent's own files, not the node's port the old agent may hold", (t) => {
  const { spec, container: c } = container("DaemonSet", "ambit-agent", "agent");
  const dir = (c.args ?? []).find((a) => a.startsWith("--probe-dir="))?.slice("--probe-dir=".length);
  t.truthy(dir);
  const probes = c as unknown as Record<string, { exec?: { command: string[] } }>;
  t.true(probes.readinessProbe?.exec?.command.join(" ").includes(`${dir}/ready`));
  t.true(probes.livenessProbe?.exec?.command.join(" ").includes(`${dir}/alive`));
  const mount = ((c.volumeMounts ?? []) as Array<{ name: string; mountPath: string }>).find((m) => m.mountPath === dir);
  const volume = (spec.volumes ?? []).find((v) => v.name === mount?.name) as Record<string, unknown> | undefined;
  t.truthy(volume?.emptyDir, "the pod's own volume, not a host path the old agent shares");
});

/** hostPath volumes `c` mounts, as [mountPath, host path]. */
function hostMounts(spec: PodSpec, c: { volumeMounts?: { name: string; mountPath: string }[] }): string[][] {
  const hostPath = new Map(
    (spec.volumes ?? []).flatMap((v) => {
      const path = (v.hostPath as { path?: string } | undefined)?.path;
      return path ? [[v.name, path] as const] : [];
    }),
  );
  return (c.volumeMounts ?? []).flatMap((m) => {
    const path = hostPath.get(m.name);
    return path ? [[m.mountPath, path]] : [];
  });
}

const CNI_DIRS = [
  ["/opt/cni/bin", "--cni-bin-dir"],
  ["/etc/cni/net.d", "--cni-conf-dir"],
] as const;

for (const w of [
  { kind: "DaemonSet", name: "ambit-agent", container: "install-cni", command: "cni-install" },
  { kind: "DaemonSet", name: "ambit-cni-uninstall", container: "uninstall-cni", command: "cni-uninstall" },
]) {
  test(`${w.kind}/${w.name} runs \`ambit ${w.command}\` in an init container, the host's CNI dirs at their own paths`, (t) => {
    const object = OBJECTS.find(
      (o) => o.kind === w.kind && o.metadata.name === w.name && o.metadata.namespace === "ambit-system",
    );
    const spec = object && (podSpecOf(object) as PodSpec | undefined);
    const init = spec?.initContainers?.find((c) => c.name === w.container);
    if (!spec || !init) throw new Error(`no init container ${w.container} in ${w.kind}/${w.name}`);
    const args = init.args ?? [];
    t.is(args[0], w.command);
    // The paths written into the CNI configuration are the ones the plugin reads on the host: the same on both.
    t.deepEqual(hostMounts(spec, init).sort(), CNI_DIRS.map(([path]) => [path, path]).sort());
    for (const [path, flag] of CNI_DIRS) t.true(args.includes(`${flag}=${path}`), `${flag}=${path}`);
    if (w.command === "cni-install") {
      // A sidecar: keeps the entry and the token current for the pod's life (agent/cni/install.ts, watch()).
      t.true(args.includes("--watch"));
      t.is((init as { restartPolicy?: string }).restartPolicy, "Always");
    }
  });
}

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
