import { closeFd } from "../../native-bindings/io.js";
import { AmbitError } from "../errors.js";
import { SharedCounters } from "./shared-counters.js";
import type { RelayTarget } from "./tcp-relay.js";
import { DataplaneWorker, type WorkerCommand } from "./worker-handle.js";
import type { WorkerEvent, WorkerStats } from "./worker-protocol.js";

export interface WorkerPoolOptions {
  /** Hears each worker's batched events. */
  onEvents?: (events: WorkerEvent[]) => void;
  /** A worker thread ended without being asked to (its exit code). */
  onUnexpectedExit?: (code: number) => void;
  /** A worker cannot go on: the process must end with `status`. */
  onFatal?: (status: number) => void;
}

/**
 * N data-plane worker threads serving the same listening socket: each worker's epoll set watches the one fd
 * (EPOLLEXCLUSIVE, see ListenerOptions.shared) and whichever worker is free accepts the next connection.
 *
 * Why one shared fd and not one SO_REUSEPORT listener per worker (test/bench/spread-bench.ts: 2 workers relaying
 * wrk -t2 to a local nginx, 2 runs of 3 rounds, load average 1 to 9 on 2 shared cores, so only large differences
 * count):
 * - CPU per request is the same within the noise: keep-alive -c64 20.9-29.3 µs shared vs 18.5-27.4 reuseport (one
 *   worker 22.2-31.8); Connection: close -c64 124-141 vs 122-168 (one worker 141-172). Keep-alive -c16 costs more
 *   with 2 workers either way: 29.6-41.4 shared, 21.9-38.2 reuseport, 20.9-28.4 one worker.
 * - Spread: SO_REUSEPORT hashes the 4-tuple, so it splits many connections evenly (close: 18846/18409) and a burst
 *   of keep-alive ones by chance (5/12 to 10/7 of 17, 28/37 to 34/31 of 65). A shared queue goes to whichever
 *   worker runs first: that follows load, but on a busy machine a burst of keep-alive connections can land on one
 *   worker (16/1, 14/3, 12/53 in the same runs; see SHARED_ACCEPTS_PER_EVENT in listener.ts).
 * - SO_REUSEPORT costs what a shared fd does not: N listening fds per pod listener, each made in the pod's
 *   namespace; a member that closes alone (a worker leaving) resets the connections queued on it, as they are not
 *   migrated (net.ipv4.tcp_migrate_req is 0 by default, per namespace): 85-110 of 200 queued connections were reset
 *   when one of 2 members closed; and a process in the pod with the agent's uid (root in many containers) that
 *   binds the port with SO_REUSEPORT silently joins the group and takes a share of the connections, where binding
 *   a plain listener's port fails with EADDRINUSE.
 *
 * The pool owns the listening fds it was handed and closes them after every worker stopped watching them.
 * End it with stop(), never by terminating its threads (see DataplaneWorker).
 */
export class DataplaneWorkerPool {
  /** One counter row per worker, read by the main thread's metrics (AgentMetrics.watchDataplane). */
  readonly counters: SharedCounters;
  readonly #workers: DataplaneWorker[];
  readonly #listenFds: number[] = [];
  #stopping: Promise<number[]> | undefined;

  constructor(count: number, options: WorkerPoolOptions = {}) {
    if (!Number.isInteger(count) || count < 1) {
      throw new AmbitError("pool_bad_worker_count", `a worker pool needs 1 or more workers, not ${count}`);
    }
    this.counters = new SharedCounters(count);
    this.#workers = Array.from(
      { length: count },
      (_, row) => new DataplaneWorker({ ...options, counters: this.counters.rowRef(row), row, rows: count }),
    );
  }

  get size(): number {
    return this.#workers.length;
  }

  /**
   * Every worker accepts from `listenFd` and relays to `target`. The pool owns the fd from this call on (closed by
   * stop(), also when serving failed). A worker serves one listener for now: a second serve fails.
   */
  async serve(listenFd: number, target: RelayTarget, connectTimeoutMs = 10_000): Promise<void> {
    if (this.#stopping) {
      closeFd(listenFd);
      throw new AmbitError("pool_stopped", "the worker pool is stopped");
    }
    this.#listenFds.push(listenFd);
    await Promise.all(this.#workers.map((worker) => worker.serve(listenFd, target, connectTimeoutMs, true)));
  }

  /** Sends `command` to every worker; resolves once each carried it out (messages reach a worker in send order). */
  async broadcast(command: WorkerCommand): Promise<void> {
    await Promise.all(this.#workers.map((worker) => worker.send(command)));
  }

  /** Each worker's figures, in worker order. */
  stats(): Promise<WorkerStats[]> {
    return Promise.all(this.#workers.map((worker) => worker.stats()));
  }

  /**
   * Stops every worker (each stops watching the listeners and resets its connections), then closes the listening
   * fds: closing them earlier would let a worker's epoll set see a reused fd number. Resolves with the exit codes.
   */
  stop(): Promise<number[]> {
    this.#stopping ??= Promise.allSettled(this.#workers.map((worker) => worker.stop())).then((results) => {
      for (const fd of this.#listenFds.splice(0)) closeFd(fd);
      return results.map((r) => (r.status === "fulfilled" ? r.value : -1));
    });
    return this.#stopping;
  }
}
