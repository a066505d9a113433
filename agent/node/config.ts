/** The agent's settings, from command-line flags with AMBIT_* environment variables as defaults. Pure. */
import { parseArgs } from "node:util";
import { DEFAULT_TRUST_DOMAIN } from "../identity/spiffe.js";
import { ConfigError } from "./config-error.js";
import { type ClusterSourceConfig, ROOT_NAMESPACE_FLAG, SOURCE_FLAGS, sourceConfig } from "./source-flags.js";

export { ConfigError };

export interface AgentConfig {
  nodeName: string;
  /** Where the cluster comes from: the API server or local manifests. */
  source: ClusterSourceConfig;
  /** Istio's root namespace: PeerAuthentication there without a selector is mesh-wide. */
  rootNamespace: string;
  trustDomain: string;
  /** Embedded CA: keep (or create) the root in this directory. */
  caDir?: string;
  /** Remote `ambit ca`. */
  caUrl?: string;
  caBundleFile?: string;
  caTokenFile?: string;
  /** Lifetime of certificates the embedded CA issues, seconds. */
  certLifetimeSec: number;
  /** Manage the node's kubelet-probe SNAT table in the agent's own namespace. */
  hostRules: boolean;
  metricsAddress: string;
  adminAddress: string;
  readyAddress: string;
  /**
   * Write exec-probe files here (admin/probe-files.ts): the DaemonSet's readiness and liveness, which must see this
   * agent and not the one beside it during an upgrade.
   */
  probeDir?: string;
  /**
   * Metrics, admin and readiness ports held by another process are served once they are free instead of failing the
   * start: during an upgrade the previous agent holds them until it exits (hostNetwork, one node, two agents).
   */
  waitForPorts?: boolean;
  logLevel: string;
  /** Data-plane worker threads; default: the CPUs the agent may use (cgroup quota and affinity). */
  workers?: number;
  /** Connections one pod may have through the agent at once (accepted sockets and HBONE streams); default 20,000. */
  maxConnectionsPerPod?: number;
  /** Connections the agent serves at once over every pod; default: from the descriptor limit (agentLimitFor). */
  maxConnections?: number;
  /**
   * On SIGTERM, how long open connections are served before the rest is reset (see defaultDrainSeconds); parsed
   * configs always have it, absent (configs built in tests) stops at once.
   */
  drainSeconds?: number;
  /**
   * The unix socket ambit-cni asks to enroll each new sandbox (deploy: /var/run/ambit/cni.sock). Off by default:
   * without a CNI plugin installed nobody would call it, and two agents on one test machine would fight over it.
   */
  cniSocket?: string;
}

/** Kubernetes' terminationGracePeriodSeconds when the pod spec sets none. */
const DEFAULT_GRACE_SECONDS = 30;

/**
 * What the agent keeps of its grace period for itself after draining: stopping the workers, closing the servers
 * and exiting before the kubelet's SIGKILL. Stopping an agent takes well under a second; the rest is headroom for a
 * loaded node.
 */
export const DRAIN_MARGIN_SECONDS = 3;

/**
 * The drain period when --drain-seconds is not given: the pod's grace period less DRAIN_MARGIN_SECONDS. A pod cannot
 * read its own terminationGracePeriodSeconds (the downward API does not expose it), so the DaemonSet passes the same
 * number in AMBIT_GRACE_SECONDS (deploy/kubernetes/agent-daemonset.yaml; a manifest test keeps the two equal).
 */
export function defaultDrainSeconds(graceSeconds: number): number {
  return Math.max(0, graceSeconds - DRAIN_MARGIN_SECONDS);
}

const env = process.env;

export function parseAgentConfig(argv: string[]): AgentConfig {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      node: { type: "string", default: env.AMBIT_NODE_NAME ?? env.NODE_NAME },
      ...SOURCE_FLAGS,
      ...ROOT_NAMESPACE_FLAG,
      "trust-domain": { type: "string", default: env.AMBIT_TRUST_DOMAIN ?? DEFAULT_TRUST_DOMAIN },
      "ca-dir": { type: "string", default: env.AMBIT_CA_DIR },
      "ca-url": { type: "string", default: env.AMBIT_CA_URL },
      "ca-bundle": { type: "string", default: env.AMBIT_CA_BUNDLE },
      "ca-token-file": { type: "string", default: env.AMBIT_CA_TOKEN_FILE },
      "cert-lifetime": { type: "string", default: env.AMBIT_CERT_LIFETIME ?? String(24 * 3600) },
      "host-rules": { type: "boolean", default: env.AMBIT_HOST_RULES === "1" },
      metrics: { type: "string", default: env.AMBIT_METRICS_ADDRESS ?? "0.0.0.0:15020" },
      admin: { type: "string", default: env.AMBIT_ADMIN_ADDRESS ?? "127.0.0.1:15000" },
      ready: { type: "string", default: env.AMBIT_READY_ADDRESS ?? "0.0.0.0:15021" },
      "probe-dir": { type: "string", default: env.AMBIT_PROBE_DIR },
      "wait-for-ports": { type: "boolean", default: env.AMBIT_WAIT_FOR_PORTS === "1" },
      "log-level": { type: "string", default: env.AMBIT_LOG_LEVEL ?? "info" },
      workers: { type: "string", default: env.AMBIT_WORKERS },
      "max-connections-per-pod": { type: "string", default: env.AMBIT_MAX_CONNECTIONS_PER_POD },
      "max-connections": { type: "string", default: env.AMBIT_MAX_CONNECTIONS },
      "drain-seconds": { type: "string", default: env.AMBIT_DRAIN_SECONDS },
      "cni-socket": { type: "string", default: env.AMBIT_CNI_SOCKET },
    },
  });
  const need = (v: string | undefined, flag: string) => {
    if (!v) throw new ConfigError(`--${flag} is required`);
    return v;
  };
  const lifetime = Number(values["cert-lifetime"]);
  if (!Number.isInteger(lifetime) || lifetime < 2) throw new ConfigError("--cert-lifetime must be whole seconds >= 2");
  const remote = values["ca-url"];
  if (!remote && !values["ca-dir"]) throw new ConfigError("one of --ca-dir (embedded CA) or --ca-url is required");
  if (remote && (!values["ca-bundle"] || !values["ca-token-file"])) {
    throw new ConfigError("--ca-url needs --ca-bundle and --ca-token-file");
  }
  for (const flag of ["metrics", "admin", "ready"] as const) parseHostPort(values[flag] as string, flag);
  const workers = values.workers === undefined ? undefined : Number(values.workers);
  if (workers !== undefined && (!Number.isInteger(workers) || workers < 1 || workers > 256)) {
    throw new ConfigError("--workers must be a whole number from 1 to 256");
  }
  const perPod = connectionLimit(values["max-connections-per-pod"], "max-connections-per-pod");
  const perAgent = connectionLimit(values["max-connections"], "max-connections");
  const grace = seconds(env.AMBIT_GRACE_SECONDS, "AMBIT_GRACE_SECONDS") ?? DEFAULT_GRACE_SECONDS;
  const drainSeconds = seconds(values["drain-seconds"], "--drain-seconds") ?? defaultDrainSeconds(grace);
  return {
    nodeName: need(values.node, "node"),
    source: sourceConfig(values),
    rootNamespace: values["root-namespace"] as string,
    trustDomain: values["trust-domain"] as string,
    ...(values["ca-dir"] ? { caDir: values["ca-dir"] } : {}),
    ...(remote ? { caUrl: remote, caBundleFile: values["ca-bundle"], caTokenFile: values["ca-token-file"] } : {}),
    certLifetimeSec: lifetime,
    hostRules: values["host-rules"] as boolean,
    metricsAddress: values.metrics as string,
    adminAddress: values.admin as string,
    readyAddress: values.ready as string,
    ...(values["probe-dir"] ? { probeDir: values["probe-dir"] } : {}),
    waitForPorts: values["wait-for-ports"] as boolean,
    logLevel: values["log-level"] as string,
    ...(workers !== undefined ? { workers } : {}),
    ...(perPod !== undefined ? { maxConnectionsPerPod: perPod } : {}),
    ...(perAgent !== undefined ? { maxConnections: perAgent } : {}),
    drainSeconds,
    ...(values["cni-socket"] ? { cniSocket: values["cni-socket"] } : {}),
  };
}

function seconds(text: string | undefined, what: string): number | undefined {
  if (text === undefined || text === "") return undefined;
  const n = /^\d{1,5}$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isInteger(n) || n > 86_400) {
    throw new ConfigError(`${what} must be whole seconds from 0 to 86400, got ${JSON.stringify(text)}`);
  }
  return n;
}

function connectionLimit(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const n = /^\d{1,10}$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isInteger(n) || n < 1 || n > 2 ** 31 - 1) {
    throw new ConfigError(`--${flag} must be a whole number from 1 to 2147483647, got ${JSON.stringify(text)}`);
  }
  return n;
}

export function parseHostPort(text: string, what = "address"): { host: string; port: number } {
  const m = /^\[?([^\]]*?)\]?:(\d{1,5})$/.exec(text);
  const port = Number(m?.[2]);
  if (!m || port > 65535) throw new ConfigError(`--${what}: expected host:port, got ${JSON.stringify(text)}`);
  return { host: m[1] || "0.0.0.0", port };
}
