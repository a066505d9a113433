import { posix } from "node:path";

// The parts of a Kubernetes pod spec that name other objects, as parsed from a manifest. Fields the walks below do
// not read are left out; every field is optional where the API allows it to be absent.

export interface KeyToPath {
  key: string;
  path: string;
}

interface SecretVolumeSource {
  secretName?: string;
  items?: KeyToPath[];
}

interface ConfigMapVolumeSource {
  name?: string;
  items?: KeyToPath[];
}

interface ProjectedSource {
  secret?: { name?: string; items?: KeyToPath[] };
  configMap?: { name?: string; items?: KeyToPath[] };
  serviceAccountToken?: { audience?: string; expirationSeconds?: number; path: string };
}

export interface Volume {
  name: string;
  secret?: SecretVolumeSource;
  configMap?: ConfigMapVolumeSource;
  projected?: { sources?: ProjectedSource[] };
  /** Other volume types (csi, cephfs, rbd, azureFile, ...), some of which name a Secret too. */
  [type: string]: unknown;
}

interface EnvVar {
  name: string;
  valueFrom?: {
    secretKeyRef?: { name?: string; key: string };
    configMapKeyRef?: { name?: string; key: string };
  };
}

interface EnvFromSource {
  secretRef?: { name?: string };
  configMapRef?: { name?: string };
}

interface VolumeMount {
  name: string;
  mountPath: string;
  subPath?: string;
}

export interface Container {
  name: string;
  args?: string[];
  env?: EnvVar[];
  envFrom?: EnvFromSource[];
  volumeMounts?: VolumeMount[];
}

export interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  ephemeralContainers?: Container[];
  volumes?: Volume[];
  imagePullSecrets?: { name?: string }[];
}

/** How a pod uses what it references. */
export type ReferenceUse = "volume" | "env" | "envFrom" | "imagePull";

/**
 * One object a pod spec references. The node authorizer lets the kubelet of the pod's node read every Secret and
 * ConfigMap named here, whole, whatever `items` or `key` select. `at` says where, for messages.
 */
export type PodReference =
  | { kind: "Secret"; name: string; use: ReferenceUse; at: string }
  | { kind: "ConfigMap"; name: string; use: ReferenceUse; at: string }
  | { kind: "ServiceAccountToken"; audience: string | undefined; use: "volume"; at: string };

/** Every Secret, ConfigMap and service-account token a pod spec references, in the order they appear. */
export function podSpecReferences(spec: PodSpec): PodReference[] {
  const refs: PodReference[] = [];
  for (const volume of spec.volumes ?? []) refs.push(...volumeReferences(volume));
  for (const container of allContainers(spec)) refs.push(...containerReferences(container));
  for (const [i, pull] of (spec.imagePullSecrets ?? []).entries()) {
    refs.push({ kind: "Secret", name: pull.name ?? "", use: "imagePull", at: `imagePullSecrets[${i}]` });
  }
  return refs;
}

function volumeReferences(volume: Volume): PodReference[] {
  const at = `volumes[${volume.name}]`;
  const refs: PodReference[] = [];
  if (volume.secret) refs.push(secret(volume.secret.secretName, "volume", `${at}.secret`));
  if (volume.configMap) refs.push(configMap(volume.configMap.name, "volume", `${at}.configMap`));
  for (const [i, source] of (volume.projected?.sources ?? []).entries()) {
    const here = `${at}.projected.sources[${i}]`;
    if (source.secret) refs.push(secret(source.secret.name, "volume", `${here}.secret`));
    if (source.configMap) refs.push(configMap(source.configMap.name, "volume", `${here}.configMap`));
    if (source.serviceAccountToken) {
      const audience = source.serviceAccountToken.audience;
      refs.push({ kind: "ServiceAccountToken", audience, use: "volume", at: `${here}.serviceAccountToken` });
    }
  }
  // In-tree and CSI volume types that authenticate with a Secret: csi.nodePublishSecretRef, azureFile.secretName,
  // and secretRef on cephfs, cinder, flexVolume, iscsi, rbd, scaleIO, storageos.
  for (const [type, source] of Object.entries(volume)) {
    if (type === "secret" || type === "projected" || typeof source !== "object" || source === null) continue;
    const fields = source as { secretRef?: { name?: string }; nodePublishSecretRef?: { name?: string } };
    const named = source as { secretName?: unknown };
    if (fields.secretRef) refs.push(secret(fields.secretRef.name, "volume", `${at}.${type}.secretRef`));
    if (fields.nodePublishSecretRef) {
      refs.push(secret(fields.nodePublishSecretRef.name, "volume", `${at}.${type}.nodePublishSecretRef`));
    }
    if (typeof named.secretName === "string") refs.push(secret(named.secretName, "volume", `${at}.${type}.secretName`));
  }
  return refs;
}

function containerReferences(container: Container): PodReference[] {
  const at = `containers[${container.name}]`;
  const refs: PodReference[] = [];
  for (const env of container.env ?? []) {
    const from = env.valueFrom;
    if (from?.secretKeyRef) refs.push(secret(from.secretKeyRef.name, "env", `${at}.env[${env.name}].secretKeyRef`));
    if (from?.configMapKeyRef) {
      refs.push(configMap(from.configMapKeyRef.name, "env", `${at}.env[${env.name}].configMapKeyRef`));
    }
  }
  for (const [i, from] of (container.envFrom ?? []).entries()) {
    if (from.secretRef) refs.push(secret(from.secretRef.name, "envFrom", `${at}.envFrom[${i}].secretRef`));
    if (from.configMapRef) refs.push(configMap(from.configMapRef.name, "envFrom", `${at}.envFrom[${i}].configMapRef`));
  }
  return refs;
}

const secret = (name: string | undefined, use: ReferenceUse, at: string): PodReference => ({
  kind: "Secret",
  name: name ?? "",
  use,
  at,
});

const configMap = (name: string | undefined, use: ReferenceUse, at: string): PodReference => ({
  kind: "ConfigMap",
  name: name ?? "",
  use,
  at,
});

function allContainers(spec: PodSpec): Container[] {
  return [...(spec.initContainers ?? []), ...spec.containers, ...(spec.ephemeralContainers ?? [])];
}

/** Where a file a container reads comes from. */
export type MountedFileSource =
  | { kind: "Secret" | "ConfigMap"; name: string; key: string }
  | { kind: "ServiceAccountToken"; audience: string | undefined };

/**
 * The Secret or ConfigMap key (or projected token) that `file` holds in container `containerName`, or undefined
 * when no mount covers the file or its volume is of another type. The deepest mount covering the file wins, as in
 * the container's mount table.
 */
export function mountedFileSource(spec: PodSpec, containerName: string, file: string): MountedFileSource | undefined {
  const container = allContainers(spec).find((c) => c.name === containerName);
  const target = posix.normalize(file);
  const mount = (container?.volumeMounts ?? [])
    .filter((m) => target === posix.normalize(m.mountPath) || target.startsWith(`${posix.normalize(m.mountPath)}/`))
    .sort((a, b) => posix.normalize(b.mountPath).length - posix.normalize(a.mountPath).length)[0];
  if (!mount) return undefined;
  const volume = (spec.volumes ?? []).find((v) => v.name === mount.name);
  if (!volume) return undefined;
  const inVolume = posix.join(mount.subPath ?? "", posix.relative(posix.normalize(mount.mountPath), target));

  if (volume.configMap?.name) return keyed("ConfigMap", volume.configMap.name, volume.configMap.items, inVolume);
  if (volume.secret?.secretName) return keyed("Secret", volume.secret.secretName, volume.secret.items, inVolume);
  for (const source of volume.projected?.sources ?? []) {
    const token = source.serviceAccountToken;
    if (token && posix.normalize(token.path) === inVolume) {
      return { kind: "ServiceAccountToken", audience: token.audience };
    }
    const found =
      (source.configMap?.name && keyed("ConfigMap", source.configMap.name, source.configMap.items, inVolume)) ||
      (source.secret?.name && keyed("Secret", source.secret.name, source.secret.items, inVolume));
    if (found) return found;
  }
  return undefined;
}

/** With `items`, only the listed keys appear, at their paths; without, every key appears under its own name. */
function keyed(
  kind: "Secret" | "ConfigMap",
  name: string,
  items: KeyToPath[] | undefined,
  inVolume: string,
): MountedFileSource | undefined {
  if (items) {
    const item = items.find((i) => posix.normalize(i.path) === inVolume);
    return item ? { kind, name, key: item.key } : undefined;
  }
  // Keys never hold a "/"; "." is the volume's directory itself.
  return inVolume.includes("/") || inVolume === "." ? undefined : { kind, name, key: inVolume };
}
