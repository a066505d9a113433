/**
 * The simulated cluster as Kubernetes objects, the same shapes the API server serves: Namespaces, Pods (with
 * status.podIPs, and the `ambit.dev/netns` annotation unless the pod is to be discovered), Services and their
 * EndpointSlices, and a workload PeerAuthentication per pod that asks for one. Pure.
 */
import type { SimPlan, SimPod, SimService } from "./topology.js";

export const NETNS_ANNOTATION = "ambit.dev/netns";
/** A label every sim pod carries, so a per-pod PeerAuthentication can select exactly it. */
export const SIM_POD_LABEL = "sim.ambit.dev/pod";

export interface NamespaceSpec {
  name: string;
  labels?: Record<string, string>;
}

type KubeObject = Record<string, unknown>;

export function simObjects(plan: SimPlan, namespaces: readonly NamespaceSpec[] = []): KubeObject[] {
  const names = new Map<string, Record<string, string>>();
  for (const n of namespaces) names.set(n.name, { ...n.labels });
  for (const p of plan.pods) if (!names.has(p.namespace)) names.set(p.namespace, {});
  for (const s of plan.services) if (!names.has(s.namespace)) names.set(s.namespace, {});
  return [
    ...[...names].map(([name, labels]) => ({
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name, labels },
    })),
    ...plan.pods.map(podObject),
    ...plan.pods.filter((p) => p.peerAuthentication).map(peerAuthenticationObject),
    ...plan.services.flatMap((s) => [serviceObject(s), ...endpointSliceObject(s, plan.pods)]),
  ];
}

export function podLabels(pod: SimPod): Record<string, string> {
  return { ...pod.labels, [SIM_POD_LABEL]: pod.name };
}

function podObject(pod: SimPod): KubeObject {
  const ips = pod.ipv6 ? [pod.ipv4, pod.ipv6] : [pod.ipv4];
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: pod.name,
      namespace: pod.namespace,
      uid: pod.uid,
      labels: podLabels(pod),
      ...(pod.discover ? {} : { annotations: { [NETNS_ANNOTATION]: pod.netnsPath } }),
      ...(pod.workload
        ? { ownerReferences: [{ apiVersion: "apps/v1", kind: "StatefulSet", name: pod.workload, controller: true }] }
        : {}),
    },
    spec: {
      nodeName: pod.nodeName,
      serviceAccountName: pod.serviceAccount,
      containers: [{ name: "app", image: "sim" }],
    },
    status: { phase: "Running", podIP: ips[0], podIPs: ips.map((ip) => ({ ip })) },
  };
}

function peerAuthenticationObject(pod: SimPod): KubeObject {
  return {
    apiVersion: "security.istio.io/v1",
    kind: "PeerAuthentication",
    metadata: { name: `pod-${pod.name}`, namespace: pod.namespace },
    spec: { selector: { matchLabels: { [SIM_POD_LABEL]: pod.name } }, mtls: { mode: pod.peerAuthentication } },
  };
}

function serviceObject(service: SimService): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: service.name, namespace: service.namespace },
    spec: {
      clusterIP: service.clusterIPs[0],
      clusterIPs: service.clusterIPs,
      selector: service.selector,
      ports: service.ports.map((p) => ({
        ...(p.name ? { name: p.name } : {}),
        port: p.port,
        targetPort: p.targetPort,
        protocol: "TCP",
      })),
    },
  };
}

/** The pods a Service's selector matches, in its namespace. */
export function endpointsOf(service: SimService, pods: readonly SimPod[]): SimPod[] {
  return pods.filter(
    (p) =>
      p.namespace === service.namespace && Object.entries(service.selector).every(([k, v]) => podLabels(p)[k] === v),
  );
}

/** One IPv4 slice (and one IPv6 slice on dual stack), as the EndpointSlice controller would write them. */
function endpointSliceObject(service: SimService, pods: readonly SimPod[]): KubeObject[] {
  const members = endpointsOf(service, pods);
  const families: Array<"IPv4" | "IPv6"> = service.clusterIPs.length > 1 ? ["IPv4", "IPv6"] : ["IPv4"];
  return families.map((addressType) => ({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      name: `${service.name}-${addressType.toLowerCase()}`,
      namespace: service.namespace,
      labels: { "kubernetes.io/service-name": service.name },
    },
    addressType,
    endpoints: members.map((p) => ({
      addresses: [addressType === "IPv4" ? p.ipv4 : (p.ipv6 as string)],
      conditions: { ready: true },
      nodeName: p.nodeName,
      targetRef: { kind: "Pod", namespace: p.namespace, name: p.name },
    })),
    ports: service.ports.map((p) => ({ name: p.name, port: p.targetPort, protocol: "TCP" })),
  }));
}

/**
 * What kube-proxy would install in a node's namespace for the Services: their ClusterIP:port is DNATed to one of
 * the endpoints in turn, for pods' traffic routed through the node. Endpoints on the node itself are reached over
 * the bridge, where their replies would skip the node's conntrack: those connections are masqueraded to the gateway
 * (kube-proxy's hairpin answer). nft text, applied with `nft -f -` in the node's namespace.
 */
export function kubeProxyRules(plan: SimPlan): string {
  const rules = { ip: [] as string[], ip6: [] as string[] };
  for (const service of plan.services) {
    const members = endpointsOf(service, plan.pods);
    if (members.length === 0) continue;
    for (const [i, vip] of service.clusterIPs.entries()) {
      const family = i === 0 ? "ip" : "ip6";
      for (const port of service.ports) {
        const targets = members.map((p, n) => `${n} : ${family === "ip" ? p.ipv4 : p.ipv6} . ${port.targetPort}`);
        rules[family].push(
          `${family} daddr ${vip} tcp dport ${port.port} dnat ${family} to numgen inc mod ${members.length} map { ${targets.join(", ")} }`,
        );
      }
    }
  }
  const table = (family: "ip" | "ip6", lines: string[]) =>
    lines.length === 0
      ? ""
      : `table ${family} sim-kube-proxy {
  chain services { type nat hook prerouting priority dstnat; policy accept;
    ${lines.join("\n    ")}
  }
  chain hairpin { type nat hook postrouting priority srcnat; policy accept;
    oifname "br0" ct status dnat masquerade
  }
}
`;
  return table("ip", rules.ip) + table("ip6", rules.ip6);
}
