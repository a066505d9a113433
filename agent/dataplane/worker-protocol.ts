import type { ClusterState } from "../kube/cluster-state.js";
import type { PodRecord } from "../kube/records.js";
import type { ConnectionEnd, ConnectionInfo, Denial, HandshakeRole } from "../proxy/observer.js";
import type { HandshakeResult, RefusalReason } from "../proxy/reasons.js";
import type { HboneTuning } from "../proxy/tuning.js";
import type { ListenerKind } from "../redirect/enroller.js";
import type { ConnectionLimitsRef } from "./connection-limits.js";
import type { ListenerStats } from "./listener.js";
import type { ReactorStats } from "./reactor.js";
import type { CounterRowRef } from "./shared-counters.js";
import type { RelayStats, RelayTarget } from "./tcp-relay.js";

/** A worker's workerData: the counter row it owns (it counts there; the main thread's metrics read it). */
export interface WorkerData {
  counters: CounterRowRef;
  /** This worker's row and the pool's size: connection ids are unique across workers (id * rows + row). */
  row: number;
  rows: number;
}

/** What a worker serving the mesh needs to know once (MeshDataplane sends it first). */
export interface MeshSettings {
  trustDomain: string;
  rootNamespace: string;
  mark: number;
  tuning: HboneTuning;
  /** pino level of the worker's log lines (they are forwarded to the main thread's logger). */
  logLevel: string;
  /** Connection limits and their counts, shared by every worker (connection-limits.ts). */
  limits: ConnectionLimitsRef;
}

/** An identity's current certificate, for the worker's TLS context; sent again on every rotation. */
export interface IdentityMaterial {
  chainPem: string;
  keyPem: string;
  bundlePem: string;
  serial: string;
  /** ms since the epoch: the worker stops presenting it then, even if no newer message came. */
  notAfter: number;
}

/** The resources of a ClusterState that changed since the last message (the whole snapshot is never resent). */
export type StateChanges = Partial<ClusterState>;

/** Messages from the main thread to a data-plane worker; `id` comes back in the answer. */
export type WorkerRequest =
  | {
      id: number;
      type: "serve";
      listenFd: number;
      /** The fd is shared with other workers and owned by the pool (EPOLLEXCLUSIVE, never closed by the worker). */
      shared: boolean;
      target: RelayTarget;
      connectTimeoutMs: number;
    }
  | { id: number; type: "mesh"; settings: MeshSettings }
  | { id: number; type: "state"; changes: StateChanges }
  | { id: number; type: "identity"; spiffe: string; material: IdentityMaterial | null }
  /**
   * An enrolled pod: its record, a descriptor of its network namespace (the pool's, valid until pod_gone) and its
   * slot in the connection limits (-1: none, only the agent's limit holds it).
   */
  | {
      id: number;
      type: "pod";
      key: string;
      pod: PodRecord;
      netnsFd: number;
      netnsDescription: string;
      limitSlot: number;
    }
  /** Accept from `fd` (the pool's, shared by every worker) on behalf of pod `key`. */
  | { id: number; type: "listen"; key: string; kind: ListenerKind; family: 4 | 6; fd: number }
  /** Stop watching `fd`; answered once the worker no longer touches it. */
  | { id: number; type: "unlisten"; key: string; fd: number }
  /**
   * The pod left (or the agent drains): its HBONE sessions drain; answered once no new stream can reach it (after
   * the GOAWAY notice, ~1 s), and its netns fd is no longer used from then on.
   */
  | { id: number; type: "pod_gone"; key: string }
  /** Post the events queued now; answered after them, so the answer means they arrived. */
  | { id: number; type: "flush" }
  | { id: number; type: "stats" }
  | { id: number; type: "stop" };

export interface WorkerStats {
  /** Relay connections open now. */
  live: number;
  /** fds in the worker's epoll set now. */
  watched: number;
  relay: RelayStats;
  listener: ListenerStats;
  reactor: ReactorStats;
  /** HBONE client sessions pooled by this worker. */
  pooledSessions: number;
  /** OpenSSL contexts this worker holds (built on an identity's first connection here). */
  tlsContexts: number;
}

/** What a worker reports as it works, batched (WorkerEventBatch): never one message per connection. */
export type WorkerEvent =
  | { e: "handshake"; role: HandshakeRole; result: HandshakeResult; seconds: number }
  | { e: "opened"; info: ConnectionInfo }
  | { e: "closed"; info: ConnectionInfo; end: ConnectionEnd }
  | { e: "refused"; pod: string; direction: "outbound" | "inbound"; reason: RefusalReason }
  | { e: "denied"; info: ConnectionInfo; denial: Denial }
  /** A pino JSON line of the worker's logger, re-logged by the main thread's. */
  | { e: "log"; line: string };

export type WorkerReply =
  | { id: number; type: "serving" }
  | { id: number; type: "done" }
  | { id: number; type: "stats"; stats: WorkerStats }
  | { id: number; type: "stopped" }
  | { id: number; type: "failed"; code: string; message: string };

/** Unsolicited: a batch of events. */
export interface WorkerEvents {
  type: "events";
  events: WorkerEvent[];
}

/** Unsolicited: the worker cannot go on (it lost its own network namespace); the process must end with `status`. */
export interface WorkerFatal {
  type: "fatal";
  status: number;
}
