import { errnoName } from "../../native-bindings/errors.js";
import { accept, closeFd, EAGAIN, ECONNABORTED, EINTR, EPOLLEXCLUSIVE, EPOLLIN } from "../../native-bindings/io.js";
import { AmbitError } from "../errors.js";
import { isExhaustion } from "./fd-exhaustion.js";
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

/**
 * The same bound for a listener shared by several workers: one, as nginx's default (multi_accept off). Every
 * worker wakes for a connection (see ListenerOptions.shared) and whichever runs first accepts; with 64, it took a
 * whole burst: wrk opening its keep-alive connections at once put 17/0 (-c16) and 64/1 (-c64) on 2 workers, one
 * idle for the whole run. With 1 the worst splits seen were still 16/1 and 12/53 (spread-bench.ts, 6 rounds, load
 * average 1 to 9 on 2 shared cores: which thread runs first is the scheduler's call), the extreme ones rarer. A
 * connection storm costs one more loop turn per connection, against ~140 µs of relay CPU per connection.
 */
const SHARED_ACCEPTS_PER_EVENT = 1;

export interface ListenerStats {
  accepted: number;
  /** Times accept failed for lack of descriptors or memory (each starts a pause). */
  acceptExhausted: number;
  /** Other accept failures (a connection reset while queued, ...); the listener goes on. */
  acceptFailed: number;
  /**
   * Readiness events whose first accept found the queue empty: a worker sharing the socket took the connection
   * between this worker's epoll_wait and its accept. (A worker that looks only after the other one accepted sees
   * no event at all: ReactorStats.emptyWakeups.)
   */
  acceptEmpty: number;
}

export interface ListenerOptions {
  /**
   * The listening socket is shared with other workers' reactors and owned by whoever handed it out (the worker
   * pool): it is watched with EPOLLEXCLUSIVE, removed from this epoll set on close, and never closed here.
   *
   * EPOLLEXCLUSIVE is set but, in this design, does not stop the herd: each worker's epoll fd is itself watched by
   * its libuv loop (uv_poll), never waited on directly, and the kernel (ep_poll_callback) counts an exclusive
   * wake-up as done only when it woke a task blocked in epoll_wait on that very set, so it goes on to wake the next
   * worker. Measured (spread-bench.ts herd probe, 200 sequential connections, 2 workers): the two worker threads
   * woke 693-750 times with the flag, 733-750 without, 531-619 with one SO_REUSEPORT listener each; the worker that
   * loses the race rarely reaches JS (4-37 empty loop wake-ups per 200: libuv re-checks the nested epoll fd and
   * finds it no longer readable). The flag costs nothing and takes effect if a worker ever blocks in epoll_wait.
   */
  shared?: boolean;
  /**
   * Hears each time accept ran out of descriptors or memory (the errno), once per pause: at most one call per
   * ACCEPT_PAUSE_MS per listener, whatever the backlog holds. The mesh worker logs it throttled (fd-exhaustion.ts).
   */
  onExhausted?: (errno: number) => void;
}

/** A snapshot of the accept counters of a worker's row (all its listeners), for tests and the worker's stats reply. */
export function listenerStats(counters: WorkerCounters): ListenerStats {
  return {
    accepted: counters.get(COUNTER.connections_accepted),
    acceptExhausted: counters.get(COUNTER.accepts_paused),
    acceptFailed: counters.get(COUNTER.accept_failures),
    acceptEmpty: counters.get(COUNTER.accepts_empty),
  };
}

/**
 * Accepts connections on a listening socket (non-blocking, from the main thread or openListenerFd) and hands each
 * new non-blocking fd to `onAccept`, which owns it from then on. The listener owns and closes the socket unless it
 * is `shared` (see ListenerOptions).
 */
export class Listener implements EventHandler {
  readonly #reactor: Reactor;
  readonly #counters: WorkerCounters;
  readonly #fd: number;
  readonly #shared: boolean;
  readonly #mask: number;
  readonly #acceptsPerEvent: number;
  /** -1 while paused (a shared listener is out of the epoll set then). */
  #token: number;
  #onAccept: (fd: number) => void;
  readonly #onExhausted: ((errno: number) => void) | undefined;
  #pause: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(
    reactor: Reactor,
    fd: number,
    counters: WorkerCounters,
    onAccept: (fd: number) => void,
    options: ListenerOptions = {},
  ) {
    this.#reactor = reactor;
    this.#counters = counters;
    this.#fd = fd;
    this.#onAccept = onAccept;
    this.#onExhausted = options.onExhausted;
    this.#shared = options.shared ?? false;
    this.#mask = this.#shared ? EPOLLIN | EPOLLEXCLUSIVE : EPOLLIN;
    this.#acceptsPerEvent = this.#shared ? SHARED_ACCEPTS_PER_EVENT : ACCEPTS_PER_EVENT;
    this.#token = reactor.add(fd, this.#mask, this);
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
    for (let i = 0; i < this.#acceptsPerEvent; i++) {
      const fd = accept(this.#fd, null);
      if (fd >= 0) {
        this.#counters.inc(COUNTER.connections_accepted);
        this.#onAccept(fd);
        if (this.#closed) return;
        continue;
      }
      const errno = -fd;
      if (errno === EAGAIN) {
        if (i === 0) this.#counters.inc(COUNTER.accepts_empty);
        return;
      }
      if (errno === EINTR || errno === ECONNABORTED) continue;
      if (isExhaustion(errno)) {
        this.#counters.inc(COUNTER.accepts_paused);
        this.#pauseAccepting();
        this.#onExhausted?.(errno);
        return;
      }
      // EPROTO, EPERM (a firewall verdict), ...: that connection is gone; the listener stays.
      this.#counters.inc(COUNTER.accept_failures);
    }
  }

  /**
   * Stops accepting (once). An owned socket is closed, which drops it from the epoll set; a shared one stays open
   * for the other workers, so it is removed from this epoll set explicitly.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#pause);
    this.#pause = undefined;
    if (this.#shared) {
      if (this.#token >= 0) this.#reactor.remove(this.#token);
    } else {
      this.#reactor.forget(this.#token);
      closeFd(this.#fd);
    }
    this.#token = -1;
  }

  /**
   * Stops watching for ACCEPT_PAUSE_MS. An owned listener is modified to an empty mask; an EPOLLEXCLUSIVE one
   * cannot be (epoll_ctl MOD on it fails with EINVAL), so it leaves the epoll set and is added again afterwards.
   */
  #pauseAccepting(): void {
    if (this.#shared) {
      this.#reactor.remove(this.#token);
      this.#token = -1;
    } else {
      const r = this.#reactor.modify(this.#token, 0);
      if (r < 0) {
        throw new AmbitError("listener_pause_failed", `cannot pause listener fd ${this.#fd}: ${errnoName(-r)}`);
      }
    }
    this.#pause = setTimeout(() => {
      this.#pause = undefined;
      if (this.#closed) return;
      if (!this.#shared) {
        this.#reactor.modify(this.#token, EPOLLIN);
        return;
      }
      try {
        this.#token = this.#reactor.add(this.#fd, this.#mask, this);
      } catch {
        // epoll_ctl ADD fails only for lack of kernel memory or epoll watches: try again after another pause.
        this.#pauseAccepting();
      }
    }, ACCEPT_PAUSE_MS);
  }
}
