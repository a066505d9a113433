import type { MtlsMode } from "../kube/records.js";
import type { ServiceIndex } from "../kube/service-index.js";
import type { LineLog } from "../log.js";
import type { LogThrottle } from "../log-throttle.js";
import type { HeldNetnsRef } from "../pod-netns.js";
import type { AuthorizationDecision } from "../policy/authorization.js";
import type { ConnectionAttributes } from "../policy/rules.js";
import type { ProxyObserver } from "../proxy/observer.js";
import type { HboneTuning } from "../proxy/tuning.js";
import type { Workload, WorkloadIndex } from "../proxy/workload-index.js";
import type { AuthorizedConnections } from "./authorized-connections.js";
import type { ConnectionLimits } from "./connection-limits.js";
import type { PodDial } from "./pod-socket.js";
import type { Reactor } from "./reactor.js";
import type { WorkerCounters } from "./shared-counters.js";
import type { TlsContext } from "./tls/context.js";

/**
 * Makes the socket for one connection the proxy opens on a pod's behalf, its connect started: `fd` is the caller's
 * to close whatever happens, `started` is connect(2)'s result (0, -EINPROGRESS, or -errno when it failed at once).
 * Throws when no socket can be made (EMFILE). Production: dialFromPod + startConnect (pod-socket.ts), inside the
 * pod's namespace with the proxy mark. Tests without root: a plain socket in the test's own namespace. The proxy's
 * decisions are the same either way.
 */
export type SocketFactory = (from: HeldNetnsRef, dst: PodDial) => { fd: number; started: number };

/** What every data-plane handler of one worker shares; built once per worker. */
export interface DataplaneContext {
  reactor: Reactor;
  counters: WorkerCounters;
  log: LineLog;
  /** For log lines a peer can trigger at will (refusals of hostile input). */
  throttle: LogThrottle;
  trustDomain: string;
  tuning: HboneTuning;
  observer: ProxyObserver;
  sockets: SocketFactory;
  index(): WorkloadIndex;
  /** ClusterIP:port -> Service and its ready endpoints. */
  services(): ServiceIndex;
  /** The PeerAuthentication mode in force for plaintext to `port` of the pod (Istio's precedence, per port). */
  peerAuthentication(self: Workload, port: number): MtlsMode;
  /** What the AuthorizationPolicies that select `self` (its labels as the cluster says now) decide for `c`. */
  authorize(self: Workload, c: ConnectionAttributes): AuthorizationDecision;
  /** The inbound connections relayed now, decided again when policies change. */
  authorized: AuthorizedConnections;
  /** Connections per pod and per agent, shared by every worker: an accepted socket or HBONE stream counts. */
  limits: ConnectionLimits;
  /**
   * This worker's TLS context for the current certificate of an identity, by its SPIFFE URI (`Workload.spiffe`,
   * formatted once per workload, not per connection); undefined when it has none valid now.
   */
  tlsContext(spiffe: string): TlsContext | undefined;
  nextId(): number;
}
