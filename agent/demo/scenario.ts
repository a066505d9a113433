/**
 * What the demo builds and which calls it makes. Pure data: the namespace opts the whole `default` namespace in,
 * and `legacy` opts itself out with the pod label, so enrollment by label is shown both ways.
 */
import type { NamespaceSpec, PeerAuthenticationMode } from "../kube/pod.js";
import type { SimClusterSpec } from "../sim/index.js";

export const APP_PORT = 8080;

export const CLUSTER_SPEC: SimClusterSpec = {
  nodes: [
    {
      name: "n1",
      pods: [
        { name: "frontend", serviceAccount: "frontend" },
        { name: "legacy", serviceAccount: "legacy", labels: { "ambit.dev/mesh": "disabled" } },
      ],
    },
    {
      name: "n2",
      pods: [
        { name: "backend", serviceAccount: "backend" },
        { name: "db", serviceAccount: "db" },
      ],
    },
  ],
};

/** Pods that run the demo's HTTP server. */
export const SERVERS = ["frontend", "legacy", "backend", "db"];

export function namespaces(mode: PeerAuthenticationMode): NamespaceSpec[] {
  return [{ name: "default", labels: { "ambit.dev/mesh": "enabled" }, peerAuthentication: mode }];
}

export interface Call {
  from: string;
  to: string;
  what: string;
  /** Whether the mesh must carry it (true) or refuse it (false). */
  expectOk: boolean;
  /** Expected `tls` of the connection the agents record (undefined: nothing is recorded, e.g. refused). */
  expectTls?: boolean;
}

export const PERMISSIVE_CALLS: Call[] = [
  { from: "frontend", to: "backend", what: "meshed -> meshed, across nodes (HBONE)", expectOk: true, expectTls: true },
  { from: "backend", to: "db", what: "meshed -> meshed, same node (HBONE)", expectOk: true, expectTls: true },
  { from: "legacy", to: "backend", what: "not meshed -> meshed, PERMISSIVE", expectOk: true, expectTls: false },
  { from: "frontend", to: "legacy", what: "meshed -> not meshed (passthrough)", expectOk: true, expectTls: false },
];

export const STRICT_CALLS: Call[] = [
  { from: "legacy", to: "backend", what: "not meshed -> meshed, STRICT: refused", expectOk: false },
  { from: "frontend", to: "backend", what: "meshed -> meshed under STRICT", expectOk: true, expectTls: true },
];
