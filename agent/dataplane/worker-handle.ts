import { Worker } from "node:worker_threads";
import { AmbitError } from "../errors.js";
import { type CounterRowRef, SharedCounters } from "./shared-counters.js";
import type { RelayTarget } from "./tcp-relay.js";
import type {
  WorkerData,
  WorkerEvent,
  WorkerEvents,
  WorkerFatal,
  WorkerReply,
  WorkerRequest,
  WorkerStats,
} from "./worker-protocol.js";

export interface DataplaneWorkerOptions {
  /** The counter row this worker owns (SharedCounters.rowRef); default: a row of its own that no exporter reads. */
  counters?: CounterRowRef;
  /** This worker's row and the pool's size (connection ids stay unique across workers). */
  row?: number;
  rows?: number;
  /** Hears the worker's batched events (MeshDataplane replays them into the observers and the logger). */
  onEvents?: (events: WorkerEvent[]) => void;
  /** The thread ended without being asked to stop (its exit code): the data plane it served is gone. */
  onUnexpectedExit?: (code: number) => void;
  /** The worker cannot go on and has stopped running code: the process must end with `status` now. */
  onFatal?: (status: number) => void;
}

export type WorkerCommand = WorkerRequest extends infer R ? (R extends { id: number } ? Omit<R, "id"> : never) : never;

/**
 * The main thread's side of one data-plane worker thread (agent/dataplane/worker.ts). End it with stop(), never
 * with Worker.terminate(): a terminated thread cannot run the reactor's uv_close, and Node aborts the whole process
 * on the still-open uv_poll handle ("uv_loop_close() while having open handles"). The same abort follows an
 * uncaught exception on the main thread while a worker runs (seen in a test: the real error is printed first).
 */
export class DataplaneWorker {
  readonly #worker: Worker;
  readonly #waiting = new Map<number, { resolve: (reply: WorkerReply) => void; reject: (err: Error) => void }>();
  readonly #exited: Promise<number>;
  #nextId = 1;
  #stopping = false;

  constructor(options: DataplaneWorkerOptions = {}) {
    const workerData: WorkerData = {
      counters: options.counters ?? new SharedCounters(1).rowRef(0),
      row: options.row ?? 0,
      rows: options.rows ?? 1,
    };
    this.#worker = new Worker(new URL("./worker.js", import.meta.url), { workerData });
    this.#worker.on("message", (reply: WorkerReply | WorkerEvents | WorkerFatal) => {
      if (reply.type === "events") {
        options.onEvents?.(reply.events);
        return;
      }
      if (reply.type === "fatal") {
        options.onFatal?.(reply.status);
        return;
      }
      const waiter = this.#waiting.get(reply.id);
      this.#waiting.delete(reply.id);
      if (reply.type === "failed") waiter?.reject(new AmbitError(reply.code, reply.message));
      else waiter?.resolve(reply);
    });
    this.#exited = new Promise((resolve) => {
      this.#worker.on("error", (err) => this.#failAll(err));
      this.#worker.on("exit", (code) => {
        if (!this.#stopping) options.onUnexpectedExit?.(code);
        this.#failAll(new AmbitError("worker_exited", `data-plane worker exited with code ${code}`));
        resolve(code);
      });
    });
  }

  /**
   * Relays the connections of `listenFd` to `target`. The worker owns and closes the fd from now on, unless it is
   * `shared` (DataplaneWorkerPool): then the caller keeps it and closes it once every worker watching it stopped.
   */
  async serve(listenFd: number, target: RelayTarget, connectTimeoutMs = 10_000, shared = false): Promise<void> {
    await this.#request({ type: "serve", listenFd, shared, target, connectTimeoutMs });
  }

  async stats(): Promise<WorkerStats> {
    const reply = await this.#request({ type: "stats" });
    if (reply.type !== "stats") throw new AmbitError("worker_bad_reply", `expected stats, got ${reply.type}`);
    return reply.stats;
  }

  /** Sends one request and resolves once the worker carried it out (MeshDataplane's messages). */
  async send(request: WorkerCommand): Promise<void> {
    await this.#request(request);
  }

  /** Closes the worker's listener, connections and reactor; resolves with the thread's exit code. */
  async stop(): Promise<number> {
    this.#stopping = true;
    await this.#request({ type: "stop" });
    return this.#exited;
  }

  #request(request: WorkerCommand): Promise<WorkerReply> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      this.#worker.postMessage({ ...request, id });
    });
  }

  #failAll(err: Error): void {
    for (const waiter of this.#waiting.values()) waiter.reject(err);
    this.#waiting.clear();
  }
}
