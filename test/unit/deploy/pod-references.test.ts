import test from "ava";
import { mountedFileSource, type PodSpec, podSpecReferences } from "./pod-references.js";

// A pod that names a Secret in every way the node authorizer follows, plus ConfigMaps and a projected token.
const everyWay: PodSpec = {
  initContainers: [{ name: "init", envFrom: [{ secretRef: { name: "init-env" } }] }],
  containers: [
    {
      name: "app",
      env: [
        { name: "PASSWORD", valueFrom: { secretKeyRef: { name: "db", key: "password" } } },
        { name: "MODE", valueFrom: { configMapKeyRef: { name: "settings", key: "mode" } } },
      ],
      envFrom: [{ configMapRef: { name: "more-settings" } }, { secretRef: { name: "all-env" } }],
      volumeMounts: [
        { name: "tls", mountPath: "/etc/tls" },
        { name: "bundle", mountPath: "/etc/bundle" },
        { name: "mixed", mountPath: "/var/run/mixed" },
        { name: "one-file", mountPath: "/etc/app/config.json", subPath: "app.json" },
        { name: "nested", mountPath: "/etc/tls/extra" },
      ],
    },
  ],
  ephemeralContainers: [{ name: "debug", env: [{ name: "T", valueFrom: { secretKeyRef: { key: "t" } } }] }],
  volumes: [
    { name: "tls", secret: { secretName: "tls", items: [{ key: "tls.crt", path: "cert.pem" }] } },
    { name: "bundle", configMap: { name: "bundle" } },
    {
      name: "mixed",
      projected: {
        sources: [
          { serviceAccountToken: { audience: "ca", path: "token" } },
          { secret: { name: "projected-secret", items: [{ key: "k", path: "dir/k" }] } },
          { configMap: { name: "projected-config", items: [{ key: "c", path: "c" }] } },
        ],
      },
    },
    { name: "one-file", configMap: { name: "app" } },
    { name: "nested", secret: { secretName: "extra" } },
    { name: "driver", csi: { driver: "example.csi", nodePublishSecretRef: { name: "csi-creds" } } },
    { name: "share", azureFile: { secretName: "azure-creds", shareName: "s" } },
    { name: "block", rbd: { monitors: ["m"], image: "i", secretRef: { name: "ceph-creds" } } },
    { name: "host", hostPath: { path: "/var/run/netns" } },
  ],
  imagePullSecrets: [{ name: "registry" }],
};

test("every Secret a pod spec names is found, with how it is used and where", (t) => {
  const secrets = podSpecReferences(everyWay).flatMap((r) =>
    r.kind === "Secret" ? [`${r.name} ${r.use} ${r.at}`] : [],
  );
  t.deepEqual(secrets, [
    "tls volume volumes[tls].secret",
    "projected-secret volume volumes[mixed].projected.sources[1].secret",
    "extra volume volumes[nested].secret",
    "csi-creds volume volumes[driver].csi.nodePublishSecretRef",
    "azure-creds volume volumes[share].azureFile.secretName",
    "ceph-creds volume volumes[block].rbd.secretRef",
    "init-env envFrom containers[init].envFrom[0].secretRef",
    "db env containers[app].env[PASSWORD].secretKeyRef",
    "all-env envFrom containers[app].envFrom[1].secretRef",
    // A reference without a name is still reported; the API server would refuse it, a test must not skip it.
    " env containers[debug].env[T].secretKeyRef",
    "registry imagePull imagePullSecrets[0]",
  ]);
});

test("ConfigMaps and projected tokens are found too; host paths are not references", (t) => {
  const others = podSpecReferences(everyWay).flatMap((r) => {
    if (r.kind === "ConfigMap") return [`ConfigMap ${r.name} ${r.use}`];
    return r.kind === "ServiceAccountToken" ? [`token ${r.audience}`] : [];
  });
  t.deepEqual(others, [
    "ConfigMap bundle volume",
    "token ca",
    "ConfigMap projected-config volume",
    "ConfigMap app volume",
    "ConfigMap settings env",
    "ConfigMap more-settings envFrom",
  ]);
});

test("a pod spec that names nothing has no references", (t) => {
  t.deepEqual(podSpecReferences({ containers: [{ name: "app" }] }), []);
});

test("a file resolves to the key behind it through items, whole volumes, subPath and projections", (t) => {
  const source = (file: string) => mountedFileSource(everyWay, "app", file);
  t.deepEqual(source("/etc/tls/cert.pem"), { kind: "Secret", name: "tls", key: "tls.crt" });
  // With items, only the listed keys are there.
  t.is(source("/etc/tls/tls.key"), undefined);
  // Without items, every key under its own name.
  t.deepEqual(source("/etc/bundle/ca.crt"), { kind: "ConfigMap", name: "bundle", key: "ca.crt" });
  t.deepEqual(source("/etc/bundle/./ca.crt"), { kind: "ConfigMap", name: "bundle", key: "ca.crt" });
  t.is(source("/etc/bundle"), undefined);
  t.deepEqual(source("/etc/app/config.json"), { kind: "ConfigMap", name: "app", key: "app.json" });
  t.deepEqual(source("/var/run/mixed/token"), { kind: "ServiceAccountToken", audience: "ca" });
  t.deepEqual(source("/var/run/mixed/dir/k"), { kind: "Secret", name: "projected-secret", key: "k" });
  t.deepEqual(source("/var/run/mixed/c"), { kind: "ConfigMap", name: "projected-config", key: "c" });
  // The deepest mount wins: /etc/tls/extra is its own volume.
  t.deepEqual(source("/etc/tls/extra/ca.crt"), { kind: "Secret", name: "extra", key: "ca.crt" });
  // A path that only shares a prefix with a mount is not under it.
  t.is(source("/etc/tlsx/cert.pem"), undefined);
  t.is(source("/somewhere/else"), undefined);
  t.is(mountedFileSource(everyWay, "no-such-container", "/etc/tls/cert.pem"), undefined);
});
