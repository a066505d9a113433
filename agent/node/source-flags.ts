/** The flags that say where the cluster comes from, shared by `ambit agent` and `ambit ca`. Pure. */
import { DEFAULT_ROOT_NAMESPACE } from "../kube/peer-authentication.js";
import { ConfigError } from "./config-error.js";

export type ClusterSourceConfig =
  /** The API server: in-cluster configuration, or a kubeconfig file. */
  | { kind: "kube"; kubeconfig?: string }
  /** A directory (or file) of Kubernetes manifests, followed live: local mode, the simulator, `make demo`. */
  | { kind: "manifests"; path: string };

const env = process.env;

export const SOURCE_FLAGS = {
  kube: { type: "boolean", default: env.AMBIT_KUBE === "1" },
  kubeconfig: { type: "string", default: env.AMBIT_KUBECONFIG },
  manifests: { type: "string", default: env.AMBIT_MANIFESTS },
} as const;

export const ROOT_NAMESPACE_FLAG = {
  "root-namespace": { type: "string", default: env.AMBIT_ROOT_NAMESPACE ?? DEFAULT_ROOT_NAMESPACE },
} as const;

export function sourceConfig(values: { kube?: boolean; kubeconfig?: string; manifests?: string }): ClusterSourceConfig {
  const kube = values.kube === true || values.kubeconfig !== undefined;
  if (kube && values.manifests) throw new ConfigError("--kube/--kubeconfig and --manifests exclude each other");
  if (kube) return values.kubeconfig ? { kind: "kube", kubeconfig: values.kubeconfig } : { kind: "kube" };
  if (values.manifests) return { kind: "manifests", path: values.manifests };
  throw new ConfigError("say where the cluster comes from: --kube (in-cluster), --kubeconfig FILE or --manifests PATH");
}
