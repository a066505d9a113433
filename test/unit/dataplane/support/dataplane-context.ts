/**
 * A DataplaneContext for tests without root: the worker's handlers as production builds them, except that the
 * sockets they open on a pod's behalf are plain non-blocking TCP sockets in the test's own namespace, connected on
 * loopback (a route sends a pod's address to a local listener), and TLS contexts come from a map the test edits
 * (rotation, a pod without a certificate).
 */
import { AuthorizedConnections } from "../../../../agent/dataplane/authorized-connections.js";
import { ConnectionLimits } from "../../../../agent/dataplane/connection-limits.js";
import type { DataplaneContext, SocketFactory } from "../../../../agent/dataplane/context.js";
import type { PodDial } from "../../../../agent/dataplane/pod-socket.js";
import type { Reactor } from "../../../../agent/dataplane/reactor.js";
import { WorkerCounters } from "../../../../agent/dataplane/shared-counters.js";
import type { TlsContext } from "../../../../agent/dataplane/tls/context.js";
import { AmbitError } from "../../../../agent/errors.js";
import { clusterStateOf, emptyClusterState } from "../../../../agent/kube/cluster-state.js";
import { MESH_LABEL } from "../../../../agent/kube/mesh-selection.js";
import type { AuthorizationPolicyRecord, MtlsMode } from "../../../../agent/kube/records.js";
import { ServiceIndex } from "../../../../agent/kube/service-index.js";
import { type Logger, silentLogger } from "../../../../agent/log.js";
import { LogThrottle } from "../../../../agent/log-throttle.js";
import { AuthorizationResolver } from "../../../../agent/policy/authorization.js";
import type {
  ConnectionEnd,
  ConnectionInfo,
  Denial,
  HandshakeRole,
  ProxyObserver,
} from "../../../../agent/proxy/observer.js";
import { DEFAULT_TUNING, type HboneTuning } from "../../../../agent/proxy/tuning.js";
import {
  type LocalWorkload,
  type Workload,
  WorkloadIndex,
  workloadOf,
} from "../../../../agent/proxy/workload-index.js";
import { AF_INET, AF_INET6, connect, tcpSocket } from "../../../../native-bindings/io.js";
import { encodeSockaddr, familyOf } from "../../../../native-bindings/sockaddr.js";
import { podRecord } from "../../../support/records.js";
import { TD } from "../../identity/helpers.js";

/** What the proxy reported, in order, for assertions. */
export class RecordingObserver implements ProxyObserver {
  readonly handshakes: { role: HandshakeRole; result: string; seconds: number }[] = [];
  readonly opened: ConnectionInfo[] = [];
  readonly closed: { info: ConnectionInfo; end: ConnectionEnd }[] = [];
  readonly refused: { pod: string; direction: "outbound" | "inbound"; reason: string }[] = [];
  readonly denied: { info: ConnectionInfo; denial: Denial }[] = [];

  handshake(role: HandshakeRole, result: string, seconds: number): void {
    this.handshakes.push({ role, result, seconds });
  }

  connectionOpened(info: ConnectionInfo): void {
    this.opened.push(info);
  }

  connectionClosed(info: ConnectionInfo, end: ConnectionEnd): void {
    this.closed.push({ info, end });
  }

  connectionRefused(pod: string, direction: "outbound" | "inbound", reason: string): void {
    this.refused.push({ pod, direction, reason });
  }

  connectionDenied(info: ConnectionInfo, denial: Denial): void {
    this.denied.push({ info, denial });
  }

  /** The results of the handshakes reported for `role`, in order. */
  results(role: HandshakeRole): string[] {
    return this.handshakes.filter((h) => h.role === role).map((h) => h.result);
  }
}

export interface LoopbackSockets {
  factory: SocketFactory;
  /** Every dial the proxy asked for, in order, as it asked (before the route). */
  readonly dials: PodDial[];
}

/**
 * A socket factory for tests: a plain non-blocking TCP socket (no namespace, no mark) with its connect started to
 * `route(dst)`, by default `dst` itself. A route sends a pod's address (10.x, any port) to a listener on loopback.
 */
export function loopbackSockets(route: (dst: PodDial) => PodDial = (dst) => dst): LoopbackSockets {
  const dials: PodDial[] = [];
  const factory: SocketFactory = (_from, dst) => {
    dials.push(dst);
    const to = route(dst);
    const fd = tcpSocket(familyOf(to.address) === 4 ? AF_INET : AF_INET6);
    if (fd < 0) throw new AmbitError("test_socket_failed", `socket(2) failed: errno ${-fd}`);
    return { fd, started: connect(fd, encodeSockaddr(to.address, to.port)) };
  };
  return { factory, dials };
}

/** A meshed workload of the cluster: pod `name` in `namespace`, identity from `serviceAccount`, at `ip`. */
export function meshWorkload(name: string, serviceAccount: string, ip: string, namespace = "shop"): Workload {
  const workload = workloadOf(podRecord({ name, namespace, serviceAccount, ips: [ip] }), TD);
  if (!workload) throw new Error(`no identity for ${namespace}/${name}`);
  return workload;
}

/** The cluster's meshed workloads as the proxy sees them: `workloads`' pods, each in a namespace of the mesh. */
export function meshIndex(...workloads: Workload[]): WorkloadIndex {
  const pods = workloads.map((w) => ({ ...w.pod, labels: { ...w.pod.labels, [MESH_LABEL]: "enabled" } }));
  const namespaces = [...new Set(pods.map((p) => p.namespace))].map((name) => ({ name, labels: {} }));
  return new WorkloadIndex(clusterStateOf({ namespaces, pods }), TD);
}

/** An enrolled pod of this node; its namespace handle is never used by loopbackSockets. */
export function localWorkload(name: string, serviceAccount: string, ip: string, namespace = "shop"): LocalWorkload {
  return { ...meshWorkload(name, serviceAccount, ip, namespace), netns: { fd: -1, description: `test:${name}` } };
}

export interface TestContextOptions {
  /** Merged over DEFAULT_TUNING. */
  tuning?: Partial<HboneTuning>;
  observer?: ProxyObserver;
  /** Default: loopbackSockets() (dials go where they are asked to). */
  sockets?: SocketFactory;
  /**
   * TLS context per SPIFFE ID (formatSpiffeId): read on every call, so a test rotates a certificate or takes it
   * away by editing the map. The test owns the contexts (and disposes them).
   */
  tlsContexts?: Map<string, TlsContext>;
  index?: WorkloadIndex;
  services?: ServiceIndex;
  peerAuthentication?: (self: Workload, port: number) => MtlsMode;
  /** AuthorizationPolicies by key, read on every connection (a test changes policy by editing the map). */
  authorizationPolicies?: Map<string, AuthorizationPolicyRecord>;
  log?: Logger;
  /** Default: limits no test reaches. */
  limits?: ConnectionLimits;
}

/** A worker's context on `reactor`, with the test's parts or harmless defaults (empty cluster, PERMISSIVE). */
export function testContext(reactor: Reactor, options: TestContextOptions = {}): DataplaneContext {
  const contexts = options.tlsContexts ?? new Map<string, TlsContext>();
  const index = options.index ?? new WorkloadIndex(emptyClusterState(), TD);
  const services = options.services ?? ServiceIndex.of(emptyClusterState());
  const policies = options.authorizationPolicies ?? new Map<string, AuthorizationPolicyRecord>();
  let id = 0;
  return {
    reactor,
    counters: WorkerCounters.standalone(),
    log: options.log ?? silentLogger,
    throttle: new LogThrottle(),
    trustDomain: TD,
    tuning: { ...DEFAULT_TUNING, ...options.tuning },
    observer: options.observer ?? new RecordingObserver(),
    sockets: options.sockets ?? loopbackSockets().factory,
    index: () => index,
    services: () => services,
    peerAuthentication: options.peerAuthentication ?? (() => "PERMISSIVE"),
    // A resolver per map version would memoise; tests edit the map in place, so each connection resolves afresh.
    authorized: new AuthorizedConnections(),
    limits: options.limits ?? ConnectionLimits.standalone(),
    authorize: (self, c) => new AuthorizationResolver(policies.values(), "istio-system").decide(self.pod, c),
    tlsContext: (spiffe: string) => contexts.get(spiffe),
    nextId: () => ++id,
  };
}
