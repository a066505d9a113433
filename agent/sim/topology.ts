import { createHash } from "node:crypto";
import type { MtlsMode } from "../kube/records.js";
import { SimSpecError } from "./errors.js";

/**
 * Pure planning of a simulated cluster: names and addresses only, no effects. Everything lives inside network
 * namespaces the cluster owns, so addresses never meet the host's and concurrent clusters cannot collide; the
 * `<k>` octet only makes addresses of different clusters tell apart in logs.
 *
 *   node i (1-based): pod CIDR 10.k.i.0/24 (gateway .1 on br0, pods .2, .3, ...), fd00:k:i::/64 (gateway ::1)
 *   fabric:           10.k.0.0/24 and fd00:k::/64, node i's uplink is 10.k.0.i / fd00:k::i
 */

export interface SimPodSpec {
  name: string;
  /** Kubernetes namespace; default "default". */
  namespace?: string;
  /** Default "default", as in Kubernetes. */
  serviceAccount?: string;
  labels?: Record<string, string>;
  workload?: string;
  /** A workload PeerAuthentication selecting this pod alone (label `sim.ambit.dev/pod`), in the manifests. */
  peerAuthentication?: MtlsMode;
  /**
   * Leave the namespace path out of the pod's manifest: the agent must find the namespace itself, in /proc, as on a
   * real node (every sim pod runs a sandbox process, so its namespace is there to find).
   */
  discover?: boolean;
}

/** A ClusterIP Service whose endpoints are the pods its selector matches (all ready), as kube-proxy serves it. */
export interface SimServiceSpec {
  name: string;
  namespace?: string;
  selector: Record<string, string>;
  ports: Array<{ name?: string; port: number; targetPort?: number }>;
}

export interface SimNodeSpec {
  name: string;
  pods: SimPodSpec[];
}

export interface SimClusterSpec {
  nodes: SimNodeSpec[];
  services?: SimServiceSpec[];
  /**
   * Every pod runs a sandbox process (`sleep`) that keeps its namespace visible in /proc, as a pod's pause process
   * does; default true. false leaves the namespaces without processes (tests of finding them).
   */
  sandboxes?: boolean;
  /** Dual stack (IPv4 + IPv6) when true; IPv4 only otherwise. */
  ipv6?: boolean;
  /** Netns name prefix, lowercase letters and digits, 2-10 chars; default "am" + 4 random hex digits. */
  prefix?: string;
  /**
   * Second IPv4 octet (and IPv6 group) of every address, 1-254. Default: one no other live cluster on this machine
   * has claimed, starting from one derived from the prefix (createSimCluster claims it; see octets.ts).
   */
  octet?: number;
  /** Called before each creation step (for progress output); throwing from it aborts creation and cleans up. */
  onStep?: (step: string) => void | Promise<void>;
}

export interface SimPod {
  name: string;
  namespace: string;
  serviceAccount: string;
  labels: Record<string, string>;
  workload?: string;
  peerAuthentication?: MtlsMode;
  discover: boolean;
  /** metadata.uid of the pod's manifest (stable for the cluster's life). */
  uid: string;
  nodeName: string;
  netnsName: string;
  netnsPath: string;
  ipv4: string;
  ipv6?: string;
  /** The pod's end of its veth pair (inside the pod namespace). */
  interface: string;
  /** The node's end of the pod's veth pair (inside the node namespace, a port of br0). */
  hostInterface: string;
}

export interface SimNode {
  name: string;
  /** 1-based position in the spec; the third IPv4 octet of its pod CIDR. */
  index: number;
  netnsName: string;
  netnsPath: string;
  podCidr4: string;
  podCidr6?: string;
  gateway4: string;
  gateway6?: string;
  /** The node's addresses on the fabric (on its uplink veth `up0`). */
  uplink4: string;
  uplink6?: string;
  pods: SimPod[];
}

export interface SimService {
  name: string;
  namespace: string;
  selector: Record<string, string>;
  ports: Array<{ name: string; port: number; targetPort: number }>;
  /** 10.k.255.n (the pod CIDRs use 10.k.1-254.0/24), and fd00:k:ffff::n on dual stack. */
  clusterIPs: string[];
}

export interface SimPlan {
  prefix: string;
  sandboxes: boolean;
  octet: number;
  ipv6: boolean;
  fabricNetnsName: string;
  fabricCidr4: string;
  fabricCidr6?: string;
  nodes: SimNode[];
  pods: SimPod[];
  services: SimService[];
}

export const NETNS_DIR = "/var/run/netns";
export const BRIDGE = "br0";
export const UPLINK = "up0";
export const POD_INTERFACE = "eth0";

const PREFIX_RE = /^[a-z][a-z0-9]{1,9}$/;
// DNS-1123 label (node and namespace names) and subdomain (pod names), as Kubernetes validates them.
const LABEL_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const SUBDOMAIN_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const MTLS_MODES: readonly string[] = ["PERMISSIVE", "STRICT", "DISABLE"];

/** Validates the spec and computes every name and address. Throws SimSpecError; has no effects. */
export function planSimCluster(spec: SimClusterSpec, prefix: string): SimPlan {
  if (!PREFIX_RE.test(prefix)) {
    throw new SimSpecError(`prefix "${prefix}" must be 2-10 lowercase letters/digits starting with a letter`);
  }
  if (!Array.isArray(spec.nodes) || spec.nodes.length === 0)
    throw new SimSpecError("a cluster needs at least one node");
  if (spec.nodes.length > 254) throw new SimSpecError(`at most 254 nodes, got ${spec.nodes.length}`);
  const octet = spec.octet ?? defaultOctet(prefix);
  if (!Number.isInteger(octet) || octet < 1 || octet > 254) {
    throw new SimSpecError(`octet must be an integer in 1..254, got ${octet}`);
  }
  const ipv6 = spec.ipv6 === true;
  const k6 = octet.toString(16);
  const nodeNames = new Set<string>();
  const podKeys = new Set<string>();
  const nodes: SimNode[] = [];
  const pods: SimPod[] = [];

  spec.nodes.forEach((nodeSpec, n) => {
    const index = n + 1;
    if (typeof nodeSpec?.name !== "string" || !LABEL_RE.test(nodeSpec.name)) {
      throw new SimSpecError(`node #${index}: name ${JSON.stringify(nodeSpec?.name)} is not a valid DNS label`);
    }
    if (nodeNames.has(nodeSpec.name)) throw new SimSpecError(`node name "${nodeSpec.name}" is used twice`);
    nodeNames.add(nodeSpec.name);
    if (!Array.isArray(nodeSpec.pods)) throw new SimSpecError(`node "${nodeSpec.name}": pods must be an array`);
    if (nodeSpec.pods.length > 253) {
      throw new SimSpecError(`node "${nodeSpec.name}": at most 253 pods, got ${nodeSpec.pods.length}`);
    }
    const netnsName = `${prefix}-n${index}`;
    const node: SimNode = {
      name: nodeSpec.name,
      index,
      netnsName,
      netnsPath: `${NETNS_DIR}/${netnsName}`,
      podCidr4: `10.${octet}.${index}.0/24`,
      gateway4: `10.${octet}.${index}.1`,
      uplink4: `10.${octet}.0.${index}`,
      pods: [],
    };
    if (ipv6) {
      node.podCidr6 = `fd00:${k6}:${index.toString(16)}::/64`;
      node.gateway6 = `fd00:${k6}:${index.toString(16)}::1`;
      node.uplink6 = `fd00:${k6}::${index.toString(16)}`;
    }
    nodeSpec.pods.forEach((podSpec, p) => {
      const where = `node "${nodeSpec.name}" pod #${p + 1}`;
      if (typeof podSpec?.name !== "string" || !SUBDOMAIN_RE.test(podSpec.name)) {
        throw new SimSpecError(`${where}: name ${JSON.stringify(podSpec?.name)} is not a valid DNS subdomain`);
      }
      const namespace = podSpec.namespace ?? "default";
      if (typeof namespace !== "string" || !LABEL_RE.test(namespace)) {
        throw new SimSpecError(`${where}: namespace ${JSON.stringify(namespace)} is not a valid DNS label`);
      }
      const key = `${namespace}/${podSpec.name}`;
      if (podKeys.has(key)) throw new SimSpecError(`pod ${key} is defined twice`);
      podKeys.add(key);
      if (podSpec.peerAuthentication !== undefined && !MTLS_MODES.includes(podSpec.peerAuthentication)) {
        throw new SimSpecError(`pod ${key}: unknown peerAuthentication ${JSON.stringify(podSpec.peerAuthentication)}`);
      }
      const labels = podSpec.labels ?? {};
      for (const [k, v] of Object.entries(labels)) {
        if (typeof v !== "string") throw new SimSpecError(`pod ${key}: label "${k}" must be a string`);
      }
      const host = p + 2;
      const podNetns = `${prefix}-n${index}-p${p + 1}`;
      const pod: SimPod = {
        name: podSpec.name,
        namespace,
        serviceAccount: podSpec.serviceAccount ?? "default",
        labels: { ...labels },
        nodeName: nodeSpec.name,
        netnsName: podNetns,
        netnsPath: `${NETNS_DIR}/${podNetns}`,
        ipv4: `10.${octet}.${index}.${host}`,
        interface: POD_INTERFACE,
        hostInterface: `veth${p + 1}`,
        discover: podSpec.discover === true,
        uid: uidOf(`${prefix}/${octet}/${key}`),
      };
      if (podSpec.workload !== undefined) pod.workload = podSpec.workload;
      if (podSpec.peerAuthentication !== undefined) pod.peerAuthentication = podSpec.peerAuthentication;
      if (ipv6) pod.ipv6 = `fd00:${k6}:${index.toString(16)}::${host.toString(16)}`;
      node.pods.push(pod);
      pods.push(pod);
    });
    nodes.push(node);
  });

  const plan: SimPlan = {
    prefix,
    sandboxes: spec.sandboxes !== false,
    octet,
    ipv6,
    fabricNetnsName: `${prefix}-fab`,
    fabricCidr4: `10.${octet}.0.0/24`,
    nodes,
    pods,
    services: planServices(spec.services ?? [], octet, ipv6),
  };
  if (ipv6) plan.fabricCidr6 = `fd00:${k6}::/64`;
  return plan;
}

/** A stable octet in 1..254 from the prefix: where createSimCluster starts looking for an unclaimed one. */
export function defaultOctet(prefix: string): number {
  let h = 0;
  for (const ch of prefix) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return 1 + (h % 254);
}

/** A UUID-shaped uid derived from the pod's identity in this cluster (the plan stays a pure function). */
function uidOf(seed: string): string {
  const h = createHash("sha256").update(seed).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

function planServices(specs: SimServiceSpec[], octet: number, ipv6: boolean): SimService[] {
  if (specs.length > 253) throw new SimSpecError(`at most 253 services, got ${specs.length}`);
  const keys = new Set<string>();
  return specs.map((spec, i) => {
    const namespace = spec.namespace ?? "default";
    const key = `${namespace}/${spec.name}`;
    if (typeof spec.name !== "string" || !LABEL_RE.test(spec.name) || !LABEL_RE.test(namespace)) {
      throw new SimSpecError(`service ${JSON.stringify(key)}: name and namespace must be DNS labels`);
    }
    if (keys.has(key)) throw new SimSpecError(`service ${key} is defined twice`);
    keys.add(key);
    if (!Array.isArray(spec.ports) || spec.ports.length === 0) throw new SimSpecError(`service ${key}: no ports`);
    const ports = spec.ports.map((p, j) => {
      const targetPort = p.targetPort ?? p.port;
      for (const n of [p.port, targetPort]) {
        if (!Number.isInteger(n) || n < 1 || n > 65535) throw new SimSpecError(`service ${key}: bad port ${n}`);
      }
      return { name: p.name ?? (spec.ports.length === 1 ? "" : `port-${j}`), port: p.port, targetPort };
    });
    const host = i + 1;
    const clusterIPs = [`10.${octet}.255.${host}`];
    if (ipv6) clusterIPs.push(`fd00:${octet.toString(16)}:ffff::${host.toString(16)}`);
    return { name: spec.name, namespace, selector: { ...spec.selector }, ports, clusterIPs };
  });
}
