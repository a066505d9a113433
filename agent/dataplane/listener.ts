import { errnoName } from "../../native-bindings/errors.js";
import {
  accept,
  closeFd,
  EAGAIN,
  ECONNABORTED,
  EINTR,
  EMFILE,
  ENFILE,
  ENOBUFS,
  ENOMEM,
  EPOLLIN,
} from "../../native-bindings/io.js";
import { AmbitError } from "../errors.js";
import type { EventHandler, Reactor } from "./reactor.js";
import { COUNTER, type WorkerCounters } from "./shared-counters.js";

/**
 * How long the listener stops watching for connections after accept ran out of descriptors (EMFILE/ENFILE) or
 * kernel memory. The listening socket stays readable while connections wait in its backlog, so a level-triggered
 * listener that keeps trying would spin a core; nginx pauses accepting for 500 ms on the same error. 100 ms keeps
 * the recovery quick while costing 10 wake-ups a second at most.
 */
export const ACCEPT_PAUSE_MS = 100;

/** Connections accepted per readiness event at most, so one busy listener cannot starve the relays on the loop. */
const ACCEPTS_PER_EVENT = 64;

/** A snapshot of the accept counters of a worker's row (all its listeners), for tests and the worker's stats reply. */
export interface ListenerStats {
  accepted: number;
  /** Times accept failed for lack of descriptors or memory (each starts a pause). */
  acceptExhausted: number;
  /** Other accept failures (a connection reset while queued, ...); the listener goes on. */
  acceptFailed: number;
}

export function listenerStats(counters: WorkerCounters): ListenerStats {
  return {
    accepted: counters.get(COUNTER.connections_accepted),
    acceptExhausted: counters.get(COUNTER.accepts_paused),
    acceptFailed: counters.get(COUNTER.accept_failures),
  };
}

/**
 * Accepts connections on a listening socket it owns (non-blocking, from the main thread or openListenerFd) and
 * hands each new non-blocking fd to `onAccept`, which owns it from then on.
 */
export class Listener implements EventHandler {
  #reactor: Reactor;
  #counters: WorkerCounters;
  #fd: number;
  #token: number;
  #onAccept: (fd: number) => void;
  #pause: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(reactor: Reactor, fd: number, counters: WorkerCounters, onAccept: (fd: number) => void) {
    this.#reactor = reactor;
    this.#counters = counters;
    this.#fd = fd;
    this.#onAccept = onAccept;
    this.#token = reactor.add(fd, EPOLLIN, this);
  }

  /** The worker row's accept counters now. */
  stats(): ListenerStats {
    return listenerStats(this.#counters);
  }

  /** True while accepting is paused after descriptor exhaustion. */
  get paused(): boolean {
    return this.#pause !== undefined;
  }

  onEvents(): void {
    for (let i = 0; i < ACCEPTS_PER_EVENT; i++) {
      const fd = accept(this.#fd, null);
      if (fd >= 0) {
        this.#counters.inc(COUNTER.connections_accepted);
        this.#onAccept(fd);
        if (this.#closed) return;
        continue;
      }
      const errno = -fd;
      if (errno === EAGAIN) return;
      if (errno === EINTR || errno === ECONNABORTED) continue;
      if (errno === EMFILE || errno === ENFILE || errno === ENOBUFS || errno === ENOMEM) {
        this.#counters.inc(COUNTER.accepts_paused);
        this.#pauseAccepting();
        return;
      }
      // EPROTO, EPERM (a firewall verdict), ...: that connection is gone; the listener stays.
      this.#counters.inc(COUNTER.accept_failures);
    }
  }

  /** Stops accepting and closes the listening socket (once). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#pause);
    this.#pause = undefined;
    this.#reactor.forget(this.#token);
    closeFd(this.#fd);
  }

  #pauseAccepting(): void {
    const r = this.#reactor.modify(this.#token, 0);
    if (r < 0) throw new AmbitError("listener_pause_failed", `cannot pause listener fd ${this.#fd}: ${errnoName(-r)}`);
    this.#pause = setTimeout(() => {
      this.#pause = undefined;
      if (!this.#closed) this.#reactor.modify(this.#token, EPOLLIN);
    }, ACCEPT_PAUSE_MS);
  }
}
