import type { KubeObject } from "./resources.js";

/** Minimal but well-formed objects for tests: what the real API server would hold for them, trimmed. */

export function namespace(name: string, labels: Record<string, string> = {}): KubeObject {
  return { apiVersion: "v1", kind: "Namespace", metadata: { name, labels }, spec: {}, status: { phase: "Active" } };
}

export function pod(opts: {
  name: string;
  namespace?: string;
  nodeName?: string;
  labels?: Record<string, string>;
  serviceAccount?: string;
  ip?: string;
  phase?: string;
}): KubeObject {
  const status: Record<string, unknown> = { phase: opts.phase ?? "Running" };
  if (opts.ip) {
    status.podIP = opts.ip;
    status.podIPs = [{ ip: opts.ip }];
  }
  const spec: Record<string, unknown> = {
    serviceAccountName: opts.serviceAccount ?? "default",
    containers: [{ name: "app", image: "registry.example/app:1" }],
  };
  if (opts.nodeName) spec.nodeName = opts.nodeName;
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: opts.name, namespace: opts.namespace ?? "default", labels: opts.labels ?? {} },
    spec,
    status,
  };
}

export function service(opts: {
  name: string;
  namespace?: string;
  clusterIP?: string;
  selector?: Record<string, string>;
  port?: number;
}): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: opts.name, namespace: opts.namespace ?? "default" },
    spec: {
      type: "ClusterIP",
      clusterIP: opts.clusterIP ?? "None",
      selector: opts.selector ?? { app: opts.name },
      ports: [{ name: "http", port: opts.port ?? 80, protocol: "TCP", targetPort: opts.port ?? 80 }],
    },
  };
}

export function peerAuthentication(opts: {
  name: string;
  namespace: string;
  mode: "PERMISSIVE" | "STRICT" | "DISABLE";
  matchLabels?: Record<string, string>;
}): KubeObject {
  const spec: Record<string, unknown> = { mtls: { mode: opts.mode } };
  if (opts.matchLabels) spec.selector = { matchLabels: opts.matchLabels };
  return {
    apiVersion: "security.istio.io/v1",
    kind: "PeerAuthentication",
    metadata: { name: opts.name, namespace: opts.namespace },
    spec,
  };
}
