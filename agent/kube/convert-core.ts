import {
  type Converted,
  describe,
  finish,
  ipFamily,
  isDnsLabel,
  isPort,
  isRecord,
  isSubdomain,
  type KindSpec,
  list,
  oneOf,
  optionalArray,
  optionalObject,
  optionalString,
  quote,
  readHeader,
  readLabels,
  readTimestamp,
} from "./convert-common.js";
import type { NamespaceRecord, PodRecord, ServicePortRecord, ServiceRecord } from "./records.js";

/** Core (v1) objects to records: Namespace, Pod, Service. Pure; see convert-common.ts for the shared rules. */

const NAMESPACE: KindSpec = { kind: "Namespace", apiVersions: ["v1"], namespaced: false };
const POD: KindSpec = { kind: "Pod", apiVersions: ["v1"], namespaced: true };
const SERVICE: KindSpec = { kind: "Service", apiVersions: ["v1"], namespaced: true };

/** The annotation that says where a pod's network namespace is (the sim and local mode). */
export const NETNS_ANNOTATION = "ambit.dev/netns";

const PHASES = ["Pending", "Running", "Succeeded", "Failed", "Unknown"] as const;
const PROTOCOLS = ["TCP", "UDP", "SCTP"] as const;
/** Kubernetes sets no limit on these counts; ours are far above any real object and keep a hostile one small. */
const MAX_OWNER_REFERENCES = 256;
const MAX_SERVICE_PORTS = 1024;
/** PATH_MAX. */
const MAX_PATH = 4096;

export function convertNamespace(raw: unknown): Converted<NamespaceRecord> {
  const h = readHeader(raw, NAMESPACE);
  if ("problem" in h) return h;
  // A namespace's name is a DNS-1123 label, stricter than the subdomain readHeader checks.
  if (h.name && !isDnsLabel(h.name)) h.errors.push(`metadata.name ${quote(h.name)} is not a DNS-1123 label`);
  const labels = readLabels(h.metadata.labels, "metadata.labels", h.errors);
  return finish(NAMESPACE, h, () => ({ name: h.name, labels }));
}

export function convertPod(raw: unknown): Converted<PodRecord> {
  const h = readHeader(raw, POD);
  if ("problem" in h) return h;
  const { metadata, errors } = h;
  const spec = optionalObject(h.object.spec, "spec", errors);
  const status = optionalObject(h.object.status, "status", errors);
  const annotations = optionalObject(metadata.annotations, "metadata.annotations", errors);
  const labels = readLabels(metadata.labels, "metadata.labels", errors);
  // No uid in a hand-written manifest; the API server always sets one.
  const uid = optionalString(metadata.uid, "metadata.uid", "", (s) => s.length <= 128, errors, "a string");
  // Kubernetes puts a pod without one under its namespace's "default" service account.
  const serviceAccount = optionalString(
    spec.serviceAccountName,
    "spec.serviceAccountName",
    "default",
    isSubdomain,
    errors,
    "a DNS-1123 subdomain",
  );
  const nodeName = optionalString(spec.nodeName, "spec.nodeName", "", isSubdomain, errors, "a DNS-1123 subdomain");
  // The API server sets Pending when it creates a pod; a manifest's pod has no status yet.
  const phase = oneOf(status.phase, "status.phase", PHASES, "Pending", errors);
  if (spec.hostNetwork !== undefined && spec.hostNetwork !== null && typeof spec.hostNetwork !== "boolean") {
    errors.push(`spec.hostNetwork must be a boolean, got ${describe(spec.hostNetwork)}`);
  }
  const deletion = readTimestamp(metadata.deletionTimestamp, "metadata.deletionTimestamp", errors);
  const ips = podIps(status, errors);
  const workload = workloadOf(metadata.ownerReferences, labels, h.name, errors);
  const netns = netnsOf(annotations[NETNS_ANNOTATION], errors);
  return finish(POD, h, () => {
    const pod: PodRecord = {
      uid,
      name: h.name,
      namespace: h.namespace,
      serviceAccount,
      nodeName,
      labels,
      ips,
      phase,
      hostNetwork: spec.hostNetwork === true,
      terminating: deletion !== "",
      workload,
    };
    if (netns !== undefined) pod.netns = netns;
    return pod;
  });
}

/**
 * The record to keep when `next` replaces `previous` (same namespace/name): a terminating pod whose status lost its IPs
 * keeps its last known ones until it is gone, since its connections are still being drained. Only for the same pod
 * (same uid): a pod recreated under the same name must not inherit its predecessor's addresses.
 */
export function mergePodUpdate(previous: PodRecord | undefined, next: PodRecord): PodRecord {
  if (!previous || !next.terminating || next.ips.length > 0 || previous.uid !== next.uid) return next;
  return previous.ips.length > 0 ? { ...next, ips: previous.ips } : next;
}

/** status.podIPs, else status.podIP; as Kubernetes validates them: at most one address of each family. */
function podIps(status: Record<string, unknown>, errors: string[]): string[] {
  const entries = optionalArray(status.podIPs, "status.podIPs", 2, errors);
  if (entries.some((e) => !isRecord(e))) {
    errors.push("status.podIPs must hold objects {ip}");
    return [];
  }
  const raw: unknown[] = entries.map((e) => (e as Record<string, unknown>).ip);
  if (raw.length === 0 && status.podIP !== undefined && status.podIP !== null && status.podIP !== "") {
    raw.push(status.podIP);
  }
  const bad = raw.filter((ip) => ipFamily(ip) === 0);
  if (bad.length > 0) {
    errors.push(`status.podIPs has invalid IPs ${list(bad.map(describe))}`);
    return [];
  }
  if (raw.length === 2 && ipFamily(raw[0]) === ipFamily(raw[1])) {
    errors.push("status.podIPs lists two addresses of one family");
    return [];
  }
  return raw as string[];
}

/**
 * The workload a pod belongs to: its controller's name, where a ReplicaSet's (a Deployment's pods) loses the
 * `-<pod-template-hash>` suffix to give the Deployment's name. StatefulSet, DaemonSet, Job and any other controller:
 * the owner's name. No controller: the pod's own name.
 */
function workloadOf(refs: unknown, labels: Record<string, string>, podName: string, errors: string[]): string {
  const owners = optionalArray(refs, "metadata.ownerReferences", MAX_OWNER_REFERENCES, errors);
  if (owners.some((o) => !isRecord(o))) {
    errors.push("metadata.ownerReferences must hold objects");
    return podName;
  }
  const controllers = (owners as Record<string, unknown>[]).filter((o) => o.controller === true);
  // Kubernetes allows one controller reference; two make the workload ambiguous.
  if (controllers.length > 1) errors.push("metadata.ownerReferences has more than one controller");
  const owner = controllers[0];
  if (owner === undefined) return podName;
  if (typeof owner.kind !== "string" || owner.kind === "" || !isSubdomain(owner.name)) {
    errors.push(`metadata.ownerReferences controller needs a kind and a valid name, got name ${describe(owner.name)}`);
    return podName;
  }
  const hash = labels["pod-template-hash"];
  if (owner.kind === "ReplicaSet" && hash && owner.name.endsWith(`-${hash}`) && owner.name.length > hash.length + 1) {
    return owner.name.slice(0, -(hash.length + 1));
  }
  return owner.name;
}

function netnsOf(v: unknown, errors: string[]): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v === "string" && v.startsWith("/") && v.length <= MAX_PATH && !v.includes("\0")) return v;
  errors.push(`annotation ${NETNS_ANNOTATION} must be an absolute path, got ${describe(v)}`);
  return undefined;
}

export function convertService(raw: unknown): Converted<ServiceRecord> {
  const h = readHeader(raw, SERVICE);
  if ("problem" in h) return h;
  const spec = optionalObject(h.object.spec, "spec", h.errors);
  const clusterIPs = serviceIps(spec, h.errors);
  const ports = servicePorts(spec.ports, h.errors);
  return finish(SERVICE, h, () => ({ name: h.name, namespace: h.namespace, clusterIPs, ports }));
}

/** spec.clusterIPs (else spec.clusterIP); none for headless ("None") and ExternalName Services, nor before one is
 * allocated (a manifest's Service). At most one address of each family, as Kubernetes validates them. */
function serviceIps(spec: Record<string, unknown>, errors: string[]): string[] {
  if (spec.type === "ExternalName") return [];
  const listed = optionalArray(spec.clusterIPs, "spec.clusterIPs", 2, errors);
  const raw =
    listed.length > 0 ? listed : spec.clusterIP === undefined || spec.clusterIP === null ? [] : [spec.clusterIP];
  if (raw.some((ip) => ip === "None" || ip === "")) return [];
  const bad = raw.filter((ip) => ipFamily(ip) === 0);
  if (bad.length > 0) {
    errors.push(`spec.clusterIPs has invalid IPs ${list(bad.map(describe))}`);
    return [];
  }
  if (raw.length === 2 && ipFamily(raw[0]) === ipFamily(raw[1])) {
    errors.push("spec.clusterIPs lists two addresses of one family");
    return [];
  }
  return raw as string[];
}

/** IANA_SVC_NAME, what a named targetPort must be: at most 15 characters, at least one letter. */
function isPortName(s: string): boolean {
  return s.length <= 15 && /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(s) && /[a-z]/.test(s) && !s.includes("--");
}

function servicePorts(v: unknown, errors: string[]): ServicePortRecord[] {
  const entries = optionalArray(v, "spec.ports", MAX_SERVICE_PORTS, errors);
  const ports: ServicePortRecord[] = [];
  entries.forEach((e, i) => {
    const at = `spec.ports[${i}]`;
    if (!isRecord(e)) {
      errors.push(`${at} must be an object, got ${describe(e)}`);
      return;
    }
    const name = optionalString(e.name, `${at}.name`, "", isDnsLabel, errors, "a DNS-1123 label");
    if (!isPort(e.port)) errors.push(`${at}.port must be a port number (1-65535), got ${describe(e.port)}`);
    const protocol = oneOf(e.protocol, `${at}.protocol`, PROTOCOLS, "TCP", errors);
    const port = isPort(e.port) ? e.port : 0;
    // Kubernetes defaults an absent (or 0) targetPort to the port itself.
    let targetPort: number | string = port;
    if (typeof e.targetPort === "string" && isPortName(e.targetPort)) targetPort = e.targetPort;
    else if (isPort(e.targetPort)) targetPort = e.targetPort;
    else if (e.targetPort !== undefined && e.targetPort !== null && e.targetPort !== 0) {
      errors.push(`${at}.targetPort must be a port number or a port name, got ${describe(e.targetPort)}`);
    }
    ports.push({ name, port, protocol, targetPort });
  });
  // As Kubernetes validates them: the EndpointSlice ports are matched by name, so names must tell ports apart.
  if (ports.length > 1 && ports.some((p) => p.name === ""))
    errors.push("spec.ports must all be named when there are several");
  const names = ports.map((p) => p.name).filter((n) => n !== "");
  if (new Set(names).size !== names.length) errors.push("spec.ports has duplicate names");
  const numbers = ports.map((p) => `${p.port}/${p.protocol}`);
  if (new Set(numbers).size !== numbers.length) errors.push("spec.ports lists a port and protocol twice");
  return ports;
}
