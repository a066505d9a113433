import type { Registry } from "prom-client";
import type { Logger } from "../log.js";
import type { ClusterSourceConfig } from "../node/source-flags.js";
import { ManifestSource } from "./manifest-source.js";
import type { ClusterSource } from "./source.js";

export interface OpenSourceOptions {
  /** The agent's node: its pods also get their own watch (ClusterState.nodePods). Absent for the CA. */
  nodeName?: string;
  /** Only pods (the CA authorizes against pods and needs nothing else). */
  podsOnly?: boolean;
  logger: Logger;
  /** Where the API watches register their metrics. */
  registry?: Registry;
}

/**
 * The cluster source a configuration names. The API client is loaded only when asked for (as undici loads native
 * code lazily): local mode and the simulator never load it.
 */
export async function openClusterSource(
  config: ClusterSourceConfig,
  options: OpenSourceOptions,
): Promise<ClusterSource> {
  if (config.kind === "manifests") {
    return new ManifestSource({
      path: config.path,
      logger: options.logger,
      ...(options.nodeName ? { nodeName: options.nodeName } : {}),
    });
  }
  const { kubeApiSource } = await import("./api/open.js");
  return kubeApiSource(config, options);
}
