import type { ClusterState } from "../kube/cluster-state.js";
import type { ListenerFactory } from "../redirect/enroller.js";

/**
 * What the node agent needs from the proxy that serves its pods' listeners: the Node-sockets proxy
 * (agent/proxy/proxy.ts) or the data plane's worker threads (agent/dataplane/mesh-dataplane.ts).
 */
export interface MeshDataPath {
  /** The cluster as the source sees it now: which IPs are meshed, with which identity, Services and policies. */
  setState(state: ClusterState): void;
  /** Resolves once the proxy serves (the data plane's worker threads are up). */
  ready(): Promise<void>;
  /** Roots that peers' certificates must chain to. */
  setTrustBundle(pem: string): void;
  /** Serves each in-pod listener the redirector opens. */
  readonly listenerFactory: ListenerFactory;
  /**
   * Resolves once everything the proxy saw until now reached its observer (the data plane's workers report in
   * batches; the Node-sockets proxy reports at once).
   */
  reported(): Promise<void>;
  /** HBONE client sessions pooled now (admin server, tests). */
  pooledSessions(): Promise<number>;
  /** Every HBONE session torn down and its streams reset; resolves once nothing is left running. */
  close(): Promise<void>;
}
