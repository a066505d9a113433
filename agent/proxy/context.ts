import type { X509Certificate } from "node:crypto";
import type { SecureContext } from "node:tls";
import type { H2Session } from "../h2/session.js";
import type { SpiffeId } from "../identity/spiffe.js";
import type { MtlsMode } from "../kube/records.js";
import type { ServiceIndex } from "../kube/service-index.js";
import type { Logger } from "../log.js";
import type { LogThrottle } from "../log-throttle.js";
import type { HbonePool } from "./hbone-pool.js";
import type { ProxyObserver } from "./observer.js";
import type { HboneTuning } from "./tuning.js";
import type { Workload, WorkloadIndex } from "./workload-index.js";

/** What every connection handler shares; built once by the Proxy. */
export interface ProxyContext {
  log: Logger;
  /** For log lines a peer can trigger at will (refusals of hostile input). */
  throttle: LogThrottle;
  trustDomain: string;
  mark: number;
  tuning: HboneTuning;
  observer: ProxyObserver;
  pool: HbonePool;
  certs: { secureContext(id: SpiffeId): SecureContext | undefined };
  trustBundle(): X509Certificate[];
  index(): WorkloadIndex;
  /** ClusterIP:port -> Service and its ready endpoints. */
  services(): ServiceIndex;
  /** The PeerAuthentication mode in force for plaintext to `port` of the pod (Istio's precedence, per port). */
  peerAuthentication(self: Workload, port: number): MtlsMode;
  nextId(): number;
  /** Every live accepted (server-side) HBONE session, so a stopping proxy can end them all; the pool owns its own. */
  sessions: Set<H2Session>;
}
