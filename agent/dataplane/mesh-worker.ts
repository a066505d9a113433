/**
 * What a data-plane worker holds to serve the mesh: its view of the cluster (sent by the main thread as it
 * changes), one TLS context per identity of the node's pods that has traffic here, the enrolled pods with their
 * namespace descriptors and listeners, its HBONE client pool, and the handlers each accepted connection goes to by
 * listener kind:
 *   outbound.ts       pod -> anywhere (HBONE for meshed destinations, passthrough otherwise)
 *   inbound-hbone.ts  mesh peer -> pod (mutual TLS, HTTP/2 CONNECT)
 *   inbound-plain.ts  non-mesh client -> pod (PeerAuthentication decides)
 */
import { holdHomeNetns } from "../../native-bindings/netns.js";
import { AmbitError } from "../errors.js";
import { type ClusterState, emptyClusterState } from "../kube/cluster-state.js";
import { peerAuthenticationResolver } from "../kube/peer-authentication.js";
import type { PodRecord } from "../kube/records.js";
import { ServiceIndex } from "../kube/service-index.js";
import type { LineLog } from "../log.js";
import { LogThrottle } from "../log-throttle.js";
import type { HeldNetnsRef } from "../pod-netns.js";
import { authorizationResolver } from "../policy/authorization.js";
import { type LocalWorkload, type Workload, WorkloadIndex, workloadOf } from "../proxy/workload-index.js";
import type { ListenerKind } from "../redirect/enroller.js";
import { admitting } from "./admission.js";
import { AuthorizedConnections } from "./authorized-connections.js";
import { ConnectionLimits } from "./connection-limits.js";
import type { DataplaneContext, SocketFactory } from "./context.js";
import { WorkerEventBatch } from "./event-batch.js";
import { logExhaustion } from "./fd-exhaustion.js";
import { HbonePool } from "./hbone-pool.js";
import { HboneServer } from "./inbound-hbone.js";
import { handleInboundPlaintext } from "./inbound-plain.js";
import { Listener } from "./listener.js";
import { handleOutbound } from "./outbound.js";
import { dialFromPod, dialTransparent, startConnect } from "./pod-socket.js";
import type { Reactor } from "./reactor.js";
import type { WorkerCounters } from "./shared-counters.js";
import { TcpRelay } from "./tcp-relay.js";
import { TlsContext } from "./tls/context.js";
import type { IdentityMaterial, MeshSettings, StateChanges, WorkerEvents } from "./worker-protocol.js";

interface ServedPod {
  self: LocalWorkload;
  log: LineLog;
  listeners: Map<number, Listener>;
  hbone: HboneServer;
}

/**
 * A pod identity's current certificate. Its OpenSSL context is built on the first connection that needs it, not
 * when the certificate comes: an idle worker of a 100-pod node then holds 100 PEM texts instead of 100 contexts
 * (~32 KB each, 3.1 MiB per worker, measured with 100 contexts' RssAnon), and a pod that only ever talks through
 * one worker costs the others nothing. A context takes ~0.9 ms to build (RSA key and trust bundle parsed), once per
 * identity and certificate.
 */
interface Identity {
  material: IdentityMaterial;
  context?: TlsContext;
}

export class MeshWorker {
  readonly events: WorkerEventBatch;
  readonly #ctx: DataplaneContext;
  readonly #settings: MeshSettings;
  readonly #pool: HbonePool;
  readonly #relay: TcpRelay;
  readonly #pods = new Map<string, ServedPod>();
  /**
   * HBONE servers of pods removed while they still served streams (a drain, a pod leaving): close() destroys them
   * too. Without this a stopping worker left their sessions to the TLS close timeout, 10 s past the drain period.
   */
  readonly #closing = new Set<HboneServer>();
  readonly #identities = new Map<string, Identity>();
  /** Passthrough connects not decided yet (pass-through.ts): aborted when the worker stops. */
  readonly #connecting = new Set<() => void>();
  #state: ClusterState = emptyClusterState();
  #index: WorkloadIndex;
  #services: ServiceIndex;

  constructor(
    reactor: Reactor,
    counters: WorkerCounters,
    settings: MeshSettings,
    ids: { row: number; rows: number },
    post: (message: WorkerEvents) => void,
  ) {
    this.#settings = settings;
    // This thread's way home from pods' namespaces, opened while it is surely home.
    holdHomeNetns();
    this.events = new WorkerEventBatch(post);
    const log = this.events.logger(settings.logLevel);
    this.#index = new WorkloadIndex(this.#state, settings.trustDomain);
    this.#services = ServiceIndex.of(this.#state);
    let next = 0;
    this.#ctx = {
      reactor,
      counters,
      log,
      throttle: new LogThrottle(),
      trustDomain: settings.trustDomain,
      tuning: settings.tuning,
      observer: this.events,
      sockets: podSockets(settings, log),
      index: () => this.#index,
      services: () => this.#services,
      peerAuthentication: (self, port) =>
        peerAuthenticationResolver(this.#state, settings.rootNamespace).mode(this.#current(self), port),
      authorized: new AuthorizedConnections(),
      limits: new ConnectionLimits(settings.limits),
      authorize: (self, c) =>
        authorizationResolver(this.#state.authorizationPolicies, settings.rootNamespace).decide(this.#current(self), c),
      tlsContext: (spiffe) => this.#context(spiffe),
      nextId: () => ++next * ids.rows + ids.row,
    };
    this.#pool = new HbonePool(this.#ctx);
    this.#relay = new TcpRelay(reactor, { connectTimeoutMs: settings.tuning.handshakeTimeoutMs, counters });
  }

  get pooledSessions(): number {
    return this.#pool.size;
  }

  get live(): number {
    return this.#relay.live;
  }

  /** The pod's record as the cluster says now: its labels may have changed since it was enrolled. */
  #current(self: Workload): PodRecord {
    return this.#state.nodePods?.get(self.key) ?? this.#state.pods.get(self.key) ?? self.pod;
  }

  applyState(changes: StateChanges): void {
    const previous = this.#state;
    this.#state = { ...previous, ...changes };
    if (changes.pods || changes.namespaces) this.#index = new WorkloadIndex(this.#state, this.#settings.trustDomain);
    if (changes.services || changes.endpointSlices) this.#services = ServiceIndex.of(this.#state);
    // A policy, or the labels of this node's pods that select it, changed: access already given may have been taken
    // back. The cluster's other pods do not count (a source is matched by identity and IP, never by its labels), and
    // they change all the time in a large cluster: each re-check decides every open inbound connection again.
    const localPodsChanged = this.#state.nodePods ? changes.nodePods : changes.pods;
    if (changes.authorizationPolicies || localPodsChanged) {
      this.#ctx.authorized.recheck(this.#ctx.authorize, this.#ctx.log);
    }
  }

  /**
   * A new certificate for `spiffe` (or none: it lapsed or its last pod left). Connections keep the one they began
   * with.
   */
  setIdentity(spiffe: string, material: IdentityMaterial | null): void {
    const previous = this.#identities.get(spiffe);
    if (material && previous?.material.serial === material.serial) return;
    if (material) this.#identities.set(spiffe, { material });
    else this.#identities.delete(spiffe);
    previous?.context?.dispose();
  }

  addPod(key: string, pod: LocalWorkload["pod"], netns: HeldNetnsRef, limitSlot: number): void {
    if (this.#pods.has(key)) throw new AmbitError("worker_pod_exists", `${key} is already served by this worker`);
    const workload = workloadOf(pod, this.#settings.trustDomain);
    if (!workload) throw new AmbitError("no_identity", `${key}: invalid identity`);
    const self: LocalWorkload = { ...workload, netns };
    const log = this.#ctx.log.child({ pod: key });
    this.#pods.set(key, { self, log, listeners: new Map(), hbone: new HboneServer(this.#ctx, self) });
    this.#ctx.limits.setPod(key, limitSlot);
  }

  listen(key: string, kind: ListenerKind, family: 4 | 6, fd: number): void {
    const served = this.#served(key);
    const log = served.log.child({ listener: kind });
    const deps = { ctx: this.#ctx, pool: this.#pool, relay: this.#relay, connecting: this.#connecting };
    const handle =
      kind === "outbound"
        ? (client: number) => handleOutbound(deps, served.self, family, client, log)
        : kind === "inbound"
          ? (client: number) => handleInboundPlaintext(deps, served.self, family, client, log)
          : (client: number) => served.hbone.accept(client);
    const ctx = this.#ctx;
    // Counted from accept on, released when the socket closes, however the connection ends (connection-limits.ts).
    const onAccept = admitting(ctx, key, kind, log, handle);
    const onExhausted = (errno: number) => logExhaustion(ctx.throttle, ctx.log, "accept", errno);
    served.listeners.set(fd, new Listener(ctx.reactor, fd, ctx.counters, onAccept, { shared: true, onExhausted }));
  }

  unlisten(key: string, fd: number): void {
    const served = this.#pods.get(key);
    served?.listeners.get(fd)?.close();
    served?.listeners.delete(fd);
  }

  /**
   * The pod left the mesh, or the agent is draining: the sessions it opened and accepted finish their streams and
   * close (GOAWAY both ways, so peers open their next session to whoever listens now). Resolves once no new stream
   * can reach the pod through this worker: its namespace descriptor may be closed then.
   */
  removePod(key: string): Promise<void> {
    const served = this.#pods.get(key);
    if (!served) return Promise.resolve();
    for (const listener of served.listeners.values()) listener.close();
    const closed = served.hbone.close();
    for (const server of this.#closing) if (server.live === 0) this.#closing.delete(server);
    this.#closing.add(served.hbone);
    this.#pool.closeSource(key);
    this.#pods.delete(key);
    this.#ctx.limits.forgetPod(key);
    return closed;
  }

  /** The worker is stopping: every listener, session and connection is torn down now. */
  close(): void {
    for (const served of this.#pods.values()) {
      for (const listener of served.listeners.values()) listener.close();
      served.hbone.destroy();
    }
    this.#pods.clear();
    for (const server of this.#closing) server.destroy();
    this.#closing.clear();
    this.#pool.closeAll();
    this.#relay.closeAll();
    for (const abort of this.#connecting) abort();
    this.#connecting.clear();
    for (const identity of this.#identities.values()) identity.context?.dispose();
    this.#identities.clear();
    this.events.flush();
  }

  #served(key: string): ServedPod {
    const served = this.#pods.get(key);
    if (!served) throw new AmbitError("worker_no_pod", `${key} is not served by this worker`);
    return served;
  }

  /**
   * Valid now: checked against the clock, so a certificate past its notAfter is never presented. Built on first use;
   * a certificate OpenSSL refuses leaves the identity without a context (its connections are refused, fail closed)
   * until the next certificate comes.
   */
  #context(spiffe: string): TlsContext | undefined {
    const identity = this.#identities.get(spiffe);
    if (!identity || Date.now() >= identity.material.notAfter) return undefined;
    if (identity.context) return identity.context;
    try {
      identity.context = TlsContext.create({
        chainPem: identity.material.chainPem,
        keyPem: identity.material.keyPem,
        bundlePem: identity.material.bundlePem,
        trustDomain: this.#settings.trustDomain,
      });
      return identity.context;
    } catch (err) {
      this.#identities.delete(spiffe);
      this.#ctx.log.error(
        { err, spiffe, serial: identity.material.serial },
        "cannot build a TLS context from the identity's certificate; its connections are refused until a new certificate comes",
      );
      return undefined;
    }
  }
}

/** Production sockets: made in the pod's namespace with the proxy mark, connect started. */
function podSockets(settings: MeshSettings, log: LineLog): SocketFactory {
  const options = { mark: settings.mark, socketBuffer: settings.tuning.socketBuffer };
  const transparent = { ...options, transparent: true };
  return (netns, dst) => {
    if (dst.source !== undefined) return dialTransparent(netns, dst, dst.source, transparent, log);
    const fd = dialFromPod(netns, dst, options, log);
    const started = startConnect(fd, dst);
    return { fd, started };
  };
}
