import type { ServiceIndex } from "../kube/service-index.js";
import type { Workload, WorkloadIndex } from "./workload-index.js";

export type OutboundRoute =
  /** Over HBONE to `target`, CONNECT to address:port (a pod IP: the original destination, or a Service endpoint). */
  | { kind: "hbone"; target: Workload; address: string; port: number; service?: string }
  /** Plain TCP to the original destination, untouched (a non-meshed pod, outside, or a Service kube-proxy serves). */
  | { kind: "passthrough"; service?: string }
  /** A Service with no ready endpoint: refused at once rather than left to hang. */
  | { kind: "refuse"; reason: "no_ready_endpoint"; service: string };

/**
 * Where an app's connection to `dst` goes. Pure over the snapshot's indexes.
 *
 * A meshed pod IP goes over HBONE. A Service ClusterIP:port is resolved here, not by kube-proxy: a ready endpoint is
 * picked (round robin), and a meshed endpoint is reached over HBONE with its own identity checked. kube-proxy would
 * have rewritten the destination below the pod's rules, where ambit sees only the ClusterIP and would pass the
 * connection through in plaintext, for a STRICT endpoint to refuse. An endpoint outside the mesh leaves the
 * connection to kube-proxy, unchanged. Headless Services have no ClusterIP: their clients dial pod IPs.
 */
export function routeOutbound(
  dst: { address: string; port: number },
  workloads: WorkloadIndex,
  services: ServiceIndex,
): OutboundRoute {
  const target = workloads.lookup(dst.address);
  if (target) return { kind: "hbone", target, address: dst.address, port: dst.port };
  const service = services.lookup(dst.address, dst.port);
  if (!service) return { kind: "passthrough" };
  const name = `${service.service.namespace}/${service.service.name}`;
  const picked = services.pick(service);
  if ("reason" in picked) return { kind: "refuse", reason: picked.reason, service: name };
  const endpoint = workloads.lookup(picked.endpoint.ip);
  if (!endpoint) return { kind: "passthrough", service: name };
  return { kind: "hbone", target: endpoint, address: picked.endpoint.ip, port: picked.endpoint.port, service: name };
}
