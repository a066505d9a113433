import type { ListenerStats } from "./listener.js";
import type { ReactorStats } from "./reactor.js";
import type { CounterRowRef } from "./shared-counters.js";
import type { RelayStats, RelayTarget } from "./tcp-relay.js";

/** A worker's workerData: the counter row it owns (it counts there; the main thread's metrics read it). */
export interface WorkerData {
  counters: CounterRowRef;
}

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
}

export type WorkerReply =
  | { id: number; type: "serving" }
  | { id: number; type: "stats"; stats: WorkerStats }
  | { id: number; type: "stopped" }
  | { id: number; type: "failed"; code: string; message: string };
