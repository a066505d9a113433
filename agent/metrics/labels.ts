/**
 * Label sets of the Istio-compatible TCP metrics, built from what the proxy reports. Pure.
 *
 * Only identities go into labels (workload, namespace, principal, security policy): never ports, IPs or connection
 * ids, so the number of series is bounded by workload pairs, not by traffic.
 */
import type { ConnectionInfo } from "../proxy/observer.js";

export const TRAFFIC_LABELS = [
  "reporter",
  "source_workload",
  "source_workload_namespace",
  "source_principal",
  "destination_workload",
  "destination_workload_namespace",
  "destination_principal",
  "connection_security_policy",
  "response_flags",
] as const;

export type TrafficLabel = (typeof TRAFFIC_LABELS)[number];
export type TrafficLabels = Record<TrafficLabel, string>;

/** Istio writes an unauthenticated peer's principal as "unknown", never as an empty string. */
export function principalLabel(principal: string): string {
  return principal === "" ? "unknown" : principal;
}

function nameLabel(value: string): string {
  return value === "" ? "unknown" : value;
}

/**
 * Envoy's response flags as Istio reports them: "-" for none, "DENY" for a connection an AuthorizationPolicy
 * refused (Envoy's UAEX/RBAC short forms are not used by ztunnel either).
 */
export type ResponseFlags = "-" | "DENY";

export function trafficLabels(info: ConnectionInfo, flags: ResponseFlags = "-"): TrafficLabels {
  return {
    reporter: info.reporter,
    source_workload: nameLabel(info.source.workload),
    source_workload_namespace: nameLabel(info.source.namespace),
    source_principal: principalLabel(info.source.principal),
    destination_workload: nameLabel(info.destination.workload),
    destination_workload_namespace: nameLabel(info.destination.namespace),
    destination_principal: principalLabel(info.destination.principal),
    connection_security_policy: info.tls ? "mutual_tls" : "none",
    response_flags: flags,
  };
}

/** Key of a workload (namespace + workload name), the unit whose series leave with its last pod. */
export function workloadKey(namespace: string, workload: string): string {
  return `${namespace}/${workload}`;
}

/** The workloads a label set belongs to: a leaving workload takes every series naming it on either side. */
export function workloadsOf(labels: TrafficLabels): [string, string] {
  return [
    workloadKey(labels.source_workload_namespace, labels.source_workload),
    workloadKey(labels.destination_workload_namespace, labels.destination_workload),
  ];
}
