/**
 * What the demo builds and which calls it makes. Pure data: namespace `production` is in the mesh by its label, the
 * `batch` pod of namespace `jobs` is not (a plaintext client), and the Service `backend` has one endpoint on each
 * node. PeerAuthentication comes from the seed's manifests, applied one document at a time (phases below).
 */
import type { SimClusterSpec } from "../sim/index.js";

export const APP_PORT = 8080;
export const SERVICE_PORT = 80;
export const MESH_NAMESPACE = "production";

const app = (name: string) => ({ app: name });
const prod = (name: string, sa: string, labels: Record<string, string>) => ({
  name,
  namespace: MESH_NAMESPACE,
  serviceAccount: sa,
  labels,
});

export const CLUSTER_SPEC: SimClusterSpec = {
  nodes: [
    {
      name: "n1",
      pods: [
        prod("frontend", "frontend", app("frontend")),
        prod("backend-2", "backend", app("backend")),
        prod("legacy-service", "legacy", app("legacy-service")),
        { name: "batch", namespace: "jobs", serviceAccount: "batch" },
      ],
    },
    { name: "n2", pods: [prod("backend-1", "backend", app("backend")), prod("db", "db", app("db"))] },
  ],
  services: [
    {
      name: "backend",
      namespace: MESH_NAMESPACE,
      selector: app("backend"),
      ports: [{ port: SERVICE_PORT, targetPort: APP_PORT }],
    },
  ],
};

export const MESH_NAMESPACE_LABELS = [{ name: MESH_NAMESPACE, labels: { "ambit.dev/mesh": "enabled" } }];

/** Pods that run the demo's HTTP server. */
export const SERVERS = ["frontend", "backend-1", "backend-2", "legacy-service", "db", "batch"];

export interface Call {
  from: string;
  /** A pod name, or `svc/<name>` for a Service's ClusterIP. */
  to: string;
  what: string;
  /** Whether the mesh must carry it (true) or refuse it (false). */
  expectOk: boolean;
  /** Expected `tls` of the connection the agents record (undefined: nothing is recorded, e.g. refused). */
  expectTls?: boolean;
}

export interface Phase {
  title: string;
  /** How many documents of the seed's PeerAuthentication manifests are applied by then (in order). */
  seedDocuments: number;
  calls: Call[];
}

export const PHASES: Phase[] = [
  {
    title: "PERMISSIVE (seed manifest 1): every call should succeed",
    seedDocuments: 1,
    calls: [
      {
        from: "frontend",
        to: "backend-1",
        what: "meshed -> meshed, across nodes (HBONE)",
        expectOk: true,
        expectTls: true,
      },
      { from: "backend-1", to: "db", what: "meshed -> meshed, same node (HBONE)", expectOk: true, expectTls: true },
      {
        from: "frontend",
        to: "svc/backend",
        what: "meshed -> Service VIP (HBONE to an endpoint)",
        expectOk: true,
        expectTls: true,
      },
      {
        from: "frontend",
        to: "svc/backend",
        what: "the same VIP again: the other endpoint",
        expectOk: true,
        expectTls: true,
      },
      { from: "batch", to: "backend-1", what: "not meshed -> meshed, PERMISSIVE", expectOk: true, expectTls: false },
      { from: "frontend", to: "batch", what: "meshed -> not meshed (passthrough)", expectOk: true, expectTls: false },
    ],
  },
  {
    title: "STRICT (seed manifest 2 replaces 1): plaintext into production is refused",
    seedDocuments: 2,
    calls: [
      { from: "batch", to: "backend-1", what: "not meshed -> meshed, STRICT: refused", expectOk: false },
      { from: "batch", to: "legacy-service", what: "not meshed -> legacy-service, STRICT: refused", expectOk: false },
      {
        from: "frontend",
        to: "svc/backend",
        what: "meshed -> Service VIP under STRICT",
        expectOk: true,
        expectTls: true,
      },
      { from: "frontend", to: "backend-1", what: "meshed -> meshed under STRICT", expectOk: true, expectTls: true },
    ],
  },
  {
    title: "legacy exception (seed manifest 3): DISABLE for app=legacy-service only",
    seedDocuments: 3,
    calls: [
      {
        from: "batch",
        to: "legacy-service",
        what: "not meshed -> legacy-service, DISABLE: delivered",
        expectOk: true,
        expectTls: false,
      },
      { from: "batch", to: "backend-1", what: "not meshed -> meshed, still STRICT: refused", expectOk: false },
    ],
  },
];
