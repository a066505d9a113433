import type { ClusterState } from "./cluster-state.js";

/** Whether a source's view is current; readiness and /config_dump say why when it is not. */
export interface SourceHealth {
  ok: boolean;
  reasons: string[];
}

export interface SourceEvents {
  /** The cluster changed (one snapshot per burst of changes). */
  change: [state: ClusterState];
}

/**
 * Where the agent and the CA learn about the cluster: the API server (list + watch) or local manifests. While a
 * source cannot reach its origin it keeps serving the last state it had.
 */
export interface ClusterSource {
  /** Resolves with the first complete view (every resource listed once). */
  start(): Promise<ClusterState>;
  current(): ClusterState;
  health(): SourceHealth;
  on(event: "change", listener: (state: ClusterState) => void): this;
  once(event: "change", listener: (state: ClusterState) => void): this;
  off(event: "change", listener: (state: ClusterState) => void): this;
  close(): void;
}
