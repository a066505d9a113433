/**
 * The API server as a ClusterSource: list-watches (kube-api-source.ts) feeding the agent's ClusterStore, which turns
 * what they deliver into snapshots. Loaded only when the configuration asks for the API server.
 */
import { EventEmitter } from "node:events";
import type { Registry } from "prom-client";
import type { Logger } from "../../log.js";
import type { ClusterSourceConfig } from "../../node/source-flags.js";
import type { ClusterState } from "../cluster-state.js";
import { ClusterStore } from "../cluster-store.js";
import type { StoredResource } from "../resources.js";
import type { ClusterSource, SourceEvents, SourceHealth } from "../source.js";
import { KubeApiConfig } from "./config.js";
import { KubeApiError } from "./errors.js";
import { KubeApiSource } from "./kube-api-source.js";
import { registerKubeWatchMetrics } from "./watch-metrics.js";
import { agentWatchedResources, caWatchedResources, type WatchedResource } from "./watched-resource.js";

export interface ApiSourceOptions {
  nodeName?: string;
  podsOnly?: boolean;
  logger: Logger;
  /** Where the watches' metrics (restarts, relists, newest event age) are registered. */
  registry?: Registry;
}

/** The configuration `--kube` (in-cluster) or `--kubeconfig FILE` names. */
export function apiConfig(config: ClusterSourceConfig & { kind: "kube" }): Promise<KubeApiConfig> {
  return config.kubeconfig ? KubeApiConfig.fromKubeconfig(config.kubeconfig) : KubeApiConfig.inCluster();
}

class ApiClusterSource extends EventEmitter<SourceEvents> implements ClusterSource {
  readonly #store: ClusterStore;
  readonly #api: KubeApiSource;
  readonly #log: Logger;

  constructor(
    config: KubeApiConfig,
    resources: WatchedResource[],
    options: ApiSourceOptions & { stallSeconds?: number | undefined },
  ) {
    super();
    this.#log = options.logger.child({ component: "cluster-source" });
    this.#store = new ClusterStore({
      logger: this.#log,
      resources: resources.map((r) => r.resource as StoredResource),
    });
    this.#store.on("change", (state) => this.emit("change", state));
    this.#api = new KubeApiSource({
      config,
      resources,
      sink: this.#store,
      logger: options.logger,
      ...(options.stallSeconds ? { timing: { stallMs: options.stallSeconds * 1000 } } : {}),
      ...(options.registry ? { observer: registerKubeWatchMetrics(options.registry) } : {}),
    });
  }

  /**
   * Resolves once every resource is listed. An agent never starts from an empty view: one that enrolled (or
   * unenrolled) pods from nothing would tear down every pod's redirection because its API server is slow. So it
   * waits, saying why every start timeout, while readiness reports the reasons.
   */
  async start(): Promise<ClusterState> {
    for (;;) {
      try {
        await this.#api.start();
        return this.#store.baseline();
      } catch (err) {
        if (!(err instanceof KubeApiError) || err.code !== "not_synced") throw err;
        this.#log.warn({ err }, "the API server has not answered every list yet; still waiting before enrolling");
      }
    }
  }

  current(): ClusterState {
    return this.#store.snapshot();
  }

  health(): SourceHealth {
    return this.#api.health();
  }

  close(): void {
    void this.#api.close();
  }
}

export async function kubeApiSource(
  config: ClusterSourceConfig & { kind: "kube" },
  options: ApiSourceOptions,
): Promise<ClusterSource> {
  const resources =
    options.podsOnly || !options.nodeName ? caWatchedResources() : agentWatchedResources(options.nodeName);
  return new ApiClusterSource(await apiConfig(config), resources, { ...options, stallSeconds: config.stallSeconds });
}
