/**
 * The node's one shared proxy. The redirector hands it each in-pod listener (ListenerFactory); every
 * connection any enrolled pod makes or receives then lands in one of the three handlers:
 *   outbound.ts      pod -> anywhere (HBONE for meshed destinations, passthrough otherwise)
 *   hbone-server.ts  mesh peer -> pod (mutual TLS, HTTP/2 CONNECT)
 *   inbound-plain.ts non-mesh client -> pod (PeerAuthentication decides)
 */
import type { X509Certificate } from "node:crypto";
import net from "node:net";
import type { SecureContext } from "node:tls";
import type { SpiffeId } from "../identity/spiffe.js";
import { parseTrustBundle } from "../identity/validate.js";
import { type ClusterState, emptyClusterState } from "../kube/cluster-state.js";
import { DEFAULT_ROOT_NAMESPACE, peerAuthenticationResolver } from "../kube/peer-authentication.js";
import { ServiceIndex } from "../kube/service-index.js";
import { type Logger, silentLogger } from "../log.js";
import { LogThrottle } from "../log-throttle.js";
import type { MeshDataPath } from "../node/data-path.js";
import type { EnrollTarget, ListenerKind, ServedListener } from "../redirect/enroller.js";
import { serveWithNode } from "../redirect/node-listener.js";
import { PROXY_MARK } from "../redirect/ports.js";
import type { ProxyContext } from "./context.js";
import { ProxyError } from "./errors.js";
import { HbonePool } from "./hbone-pool.js";
import { createHboneServer } from "./hbone-server.js";
import { handleInboundPlaintext } from "./inbound-plain.js";
import { nullObserver, type ProxyObserver } from "./observer.js";
import { handleOutbound } from "./outbound.js";
import { DEFAULT_TUNING, type HboneTuning } from "./tuning.js";
import { type LocalWorkload, WorkloadIndex, workloadOf } from "./workload-index.js";

export interface ProxyOptions {
  trustDomain: string;
  certs: { secureContext(id: SpiffeId): SecureContext | undefined };
  observer?: ProxyObserver;
  logger?: Logger;
  tuning?: Partial<HboneTuning>;
  mark?: number;
  /** Where mesh-wide PeerAuthentication lives (Istio's root namespace). */
  rootNamespace?: string;
}

export class MeshProxy implements MeshDataPath {
  readonly #ctx: ProxyContext;
  #state: ClusterState = emptyClusterState();
  #index: WorkloadIndex;
  #services: ServiceIndex;
  readonly #rootNamespace: string;
  #bundle: X509Certificate[] = [];
  #ids = 0;

  constructor(opts: ProxyOptions) {
    const tuning = { ...DEFAULT_TUNING, ...opts.tuning };
    const observer = opts.observer ?? nullObserver;
    this.#index = new WorkloadIndex(this.#state, opts.trustDomain);
    this.#services = ServiceIndex.of(this.#state);
    this.#rootNamespace = opts.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
    const log = opts.logger ?? silentLogger;
    this.#ctx = {
      log,
      throttle: new LogThrottle(),
      trustDomain: opts.trustDomain,
      mark: opts.mark ?? PROXY_MARK,
      tuning,
      observer,
      certs: opts.certs,
      pool: new HbonePool({
        trustDomain: opts.trustDomain,
        trustBundle: () => this.#bundle,
        observer,
        log,
        tuning,
        mark: opts.mark ?? PROXY_MARK,
      }),
      trustBundle: () => this.#bundle,
      index: () => this.#index,
      services: () => this.#services,
      peerAuthentication: (self, port) => {
        // The pod's labels as the cluster says now (they may have changed since it was enrolled); the record's own
        // labels object keys the resolver's memo.
        const current = this.#state.nodePods?.get(self.key) ?? this.#state.pods.get(self.key) ?? self.pod;
        return peerAuthenticationResolver(this.#state, this.#rootNamespace).mode(current, port);
      },
      nextId: () => ++this.#ids,
      sessions: new Set(),
    };
  }

  /** The cluster as the source sees it now: which IPs are meshed, with which identity, Services and policies. */
  setState(state: ClusterState): void {
    const previous = this.#state;
    this.#state = state;
    // Rebuilt only when their inputs changed (a snapshot shares the maps of resources that did not).
    if (state.pods !== previous.pods || state.namespaces !== previous.namespaces) {
      this.#index = new WorkloadIndex(state, this.#ctx.trustDomain);
    }
    if (state.services !== previous.services || state.endpointSlices !== previous.endpointSlices) {
      this.#services = ServiceIndex.of(state);
    }
  }

  /** Roots that peers' certificates must chain to (parsed once, used by every handshake). */
  setTrustBundle(pem: string): void {
    this.#bundle = parseTrustBundle(pem);
  }

  async ready(): Promise<void> {}

  async reported(): Promise<void> {}

  async pooledSessions(): Promise<number> {
    return this.#ctx.pool.size;
  }

  /** For the redirector: serves one in-pod listener of an enrolled pod with a Node server. */
  readonly listenerFactory = (kind: ListenerKind, family: 4 | 6, target: EnrollTarget, fd: number): ServedListener =>
    serveWithNode(this.#server(kind, family, target), fd);

  #server(kind: ListenerKind, family: 4 | 6, target: EnrollTarget): net.Server {
    const workload = workloadOf(target.pod, this.#ctx.trustDomain);
    if (!workload) throw new ProxyError("no_identity", `${target.pod.namespace}/${target.pod.name}: invalid identity`);
    const self: LocalWorkload = { ...workload, netns: target.netns };
    const log = this.#ctx.log.child({ pod: self.key, listener: kind });
    const server = kind === "hbone" ? createHboneServer(this.#ctx, self) : net.createServer({ allowHalfOpen: true });
    server.on("error", (err) => log.error({ err }, "in-pod listener failed; the pod's traffic on it is refused"));
    if (kind === "outbound") {
      server.on("connection", (s) => handleOutbound(this.#ctx, self, family, s, log));
      // The pod is leaving the mesh: the sessions it opened finish their streams and close.
      server.on("close", () => this.#ctx.pool.closeSource(self.key));
    } else if (kind === "inbound")
      server.on("connection", (s) => handleInboundPlaintext(this.#ctx, self, family, s, log));
    return server;
  }

  /** Stop: every HBONE session, pooled or accepted, is torn down and its streams reset. */
  async close(): Promise<void> {
    this.#ctx.pool.closeAll();
    for (const session of this.#ctx.sessions) session.destroy();
  }
}
