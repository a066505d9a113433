/** The flags that say where the cluster comes from, shared by `ambit agent` and `ambit ca`. Pure. */
import { DEFAULT_ROOT_NAMESPACE } from "../kube/peer-authentication.js";
import { ConfigError } from "./config-error.js";

export type ClusterSourceConfig =
  /**
   * The API server: in-cluster configuration, or a kubeconfig file. `stallSeconds`: a watch that delivers no event
   * and no bookmark for this long is cut and re-opened (the real server bookmarks about once a minute).
   */
  | { kind: "kube"; kubeconfig?: string; stallSeconds?: number }
  /** A directory (or file) of Kubernetes manifests, followed live: local mode, the simulator, `make demo`. */
  | { kind: "manifests"; path: string };

const env = process.env;

export const SOURCE_FLAGS = {
  kube: { type: "boolean", default: env.AMBIT_KUBE === "1" },
  kubeconfig: { type: "string", default: env.AMBIT_KUBECONFIG },
  manifests: { type: "string", default: env.AMBIT_MANIFESTS },
  "watch-stall-timeout": { type: "string", default: env.AMBIT_WATCH_STALL_TIMEOUT ?? "120" },
} as const;

export const ROOT_NAMESPACE_FLAG = {
  "root-namespace": { type: "string", default: env.AMBIT_ROOT_NAMESPACE ?? DEFAULT_ROOT_NAMESPACE },
} as const;

export function sourceConfig(values: {
  kube?: boolean;
  kubeconfig?: string;
  manifests?: string;
  "watch-stall-timeout"?: string;
}): ClusterSourceConfig {
  const kube = values.kube === true || values.kubeconfig !== undefined;
  if (kube && values.manifests) throw new ConfigError("--kube/--kubeconfig and --manifests exclude each other");
  if (kube) {
    const stallSeconds = Number(values["watch-stall-timeout"] ?? 120);
    if (!Number.isFinite(stallSeconds) || stallSeconds < 1) {
      throw new ConfigError("--watch-stall-timeout must be at least 1 second");
    }
    return { kind: "kube", stallSeconds, ...(values.kubeconfig ? { kubeconfig: values.kubeconfig } : {}) };
  }
  if (values.manifests) return { kind: "manifests", path: values.manifests };
  throw new ConfigError("say where the cluster comes from: --kube (in-cluster), --kubeconfig FILE or --manifests PATH");
}
