import { errnoName } from "../../native-bindings/errors.js";
import {
  closeFd,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_CTL_MOD,
  epollCreate,
  epollCtl,
  epollEvents,
  epollWait,
  eventMask,
  eventToken,
} from "../../native-bindings/io.js";
import {
  allocPollHandle,
  closeHandle,
  currentLoop,
  freePollHandle,
  pollInit,
  pollStart,
  pollStop,
  type RegisteredCallback,
  registerCloseCallback,
  registerPollCallback,
  UV_READABLE,
  type UvPollHandle,
  unregisterCallback,
  uvError,
} from "../../native-bindings/libuv.js";
import { AmbitError } from "../errors.js";

/** What the reactor calls with an fd's ready events (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP bits). */
export interface EventHandler {
  onEvents(events: number, token: number): void;
}

/**
 * Node runs queued promise reactions and process.nextTick callbacks after each callback it makes into JS itself
 * (InternalCallbackScope). A koffi callback called by libuv is not one of those: without this, a promise resolved
 * by a handler would stay pending until some unrelated Node callback ran (a test awaiting a reactor event hung
 * until the loop emptied). `process._tickCallback` is the same runNextTicks that Node's timers call between two
 * callbacks; it is undocumented, so its absence (a future Node) stops the agent at start, not silently later.
 */
const runNextTicks = (process as unknown as { _tickCallback?: () => void })._tickCallback;
if (typeof runNextTicks !== "function") {
  throw new AmbitError("reactor_no_tick_callback", "process._tickCallback is missing: this Node cannot run a reactor");
}

export interface ReactorStats {
  /** Times libuv called back because the epoll fd was readable. */
  wakeups: number;
  /**
   * Wake-ups whose epoll_wait found nothing: the event was gone before this thread looked, e.g. a connection on a
   * listening socket shared with other workers that one of them accepted first (the herd that EPOLLEXCLUSIVE does
   * not prevent here, see ListenerOptions.shared).
   */
  emptyWakeups: number;
}

/** Events taken from the kernel per libuv callback; more ready fds wait for the next loop turn (timers run between). */
const BATCH = 256;

/**
 * One epoll set, watched by the calling thread's libuv loop through a uv_poll handle: libuv calls back when the
 * epoll fd is readable, the callback takes up to BATCH ready events with a non-blocking epoll_wait and dispatches
 * each to its handler by token. Nothing blocks and nothing spins, so Node's timers, promises and MessagePorts keep
 * working on the same thread, and an idle reactor costs no CPU.
 *
 * A token is a slot index carried in epoll_event.data. A removed slot is reused only after the batch that was being
 * dispatched ends, so a stale event already taken from the kernel can never reach the slot's next owner.
 */
export class Reactor {
  readonly stats: ReactorStats = { wakeups: 0, emptyWakeups: 0 };
  #epfd: number;
  #handle: UvPollHandle;
  #onPoll: RegisteredCallback;
  #onClosed: RegisteredCallback;
  #events = epollEvents(BATCH);
  #handlers: (EventHandler | undefined)[] = [];
  #fds: number[] = [];
  #free: number[] = [];
  #freedThisBatch: number[] = [];
  #dispatching = false;
  #closing: Promise<void> | undefined;
  #resolveClosed: (() => void) | undefined;
  #onHandlerError: (err: unknown, token: number) => void;
  #live = 0;

  /** `onHandlerError` hears about a handler that threw; the loop goes on with the next event. */
  constructor(options: { onHandlerError?: (err: unknown, token: number) => void } = {}) {
    this.#onHandlerError = options.onHandlerError ?? rethrowLater;
    this.#epfd = epollCreate();
    this.#handle = allocPollHandle();
    this.#onPoll = registerPollCallback(() => this.#drain());
    this.#onClosed = registerCloseCallback(() => this.#closed());
    const init = pollInit(currentLoop(), this.#handle, this.#epfd);
    const start = init === 0 ? pollStart(this.#handle, UV_READABLE, this.#onPoll) : 0;
    if (init !== 0 || start !== 0) {
      // An initialised handle must go through uv_close; one that failed init was never linked into the loop.
      if (init === 0) {
        this.#closing = new Promise((resolve) => {
          this.#resolveClosed = resolve;
        });
        closeHandle(this.#handle, this.#onClosed);
      } else {
        this.#release();
      }
      throw new AmbitError("reactor_uv_poll_failed", `uv_poll on epoll fd failed: ${uvError(init || start)}`);
    }
  }

  /** Handlers registered now. */
  get size(): number {
    return this.#live;
  }

  /** Watches `fd` for `mask` (EPOLLIN | EPOLLOUT ...); errors and hang-ups are always reported. Returns the token. */
  add(fd: number, mask: number, handler: EventHandler): number {
    this.#assertOpen();
    const token = this.#free.pop() ?? this.#handlers.length;
    const r = epollCtl(this.#epfd, EPOLL_CTL_ADD, fd, mask, token);
    if (r < 0) {
      if (token < this.#handlers.length) this.#free.push(token);
      throw new AmbitError("reactor_add_failed", `epoll_ctl ADD fd ${fd} failed: ${errnoName(-r)}`);
    }
    this.#handlers[token] = handler;
    this.#fds[token] = fd;
    this.#live++;
    return token;
  }

  /** Changes the events watched for the fd behind `token`; returns 0 or -errno (the fd may be gone: EBADF). */
  modify(token: number, mask: number): number {
    return epollCtl(this.#epfd, EPOLL_CTL_MOD, this.#fds[token] as number, mask, token);
  }

  /** Stops watching; the fd stays open (its owner closes it). */
  remove(token: number): void {
    if (this.#handlers[token] === undefined) return;
    epollCtl(this.#epfd, EPOLL_CTL_DEL, this.#fds[token] as number, 0, token);
    this.#release(token);
  }

  /**
   * Frees `token` without an epoll_ctl call, for an fd its owner is about to close: closing the last reference to
   * an open file drops it from every epoll set, so a DEL would be one syscall per connection for nothing.
   */
  forget(token: number): void {
    if (this.#handlers[token] === undefined) return;
    this.#release(token);
  }

  /**
   * Stops the uv_poll handle and closes it; resolves once libuv's close callback ran, then the epoll fd is closed
   * and the callbacks unregistered. Until then the handle's memory stays allocated: libuv still holds it, and a
   * thread that exits with the handle open aborts ("uv_loop_close() while having open handles").
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closing = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    pollStop(this.#handle);
    closeHandle(this.#handle, this.#onClosed);
    return this.#closing;
  }

  #assertOpen(): void {
    if (this.#closing) throw new AmbitError("reactor_closed", "reactor is closed");
  }

  #release(token?: number): void {
    if (token === undefined) {
      unregisterCallback(this.#onPoll);
      unregisterCallback(this.#onClosed);
      freePollHandle(this.#handle);
      closeFd(this.#epfd);
      return;
    }
    this.#handlers[token] = undefined;
    this.#fds[token] = -1;
    this.#live--;
    (this.#dispatching ? this.#freedThisBatch : this.#free).push(token);
  }

  #closed(): void {
    this.#handlers.length = 0;
    this.#live = 0;
    this.#release();
    this.#resolveClosed?.();
    runTicks();
  }

  #drain(): void {
    if (this.#closing) return;
    const events = this.#events;
    const n = epollWait(this.#epfd, events, 0);
    this.stats.wakeups++;
    if (n <= 0) {
      this.stats.emptyWakeups++;
      return;
    }
    this.#dispatching = true;
    let i = 0;
    while (i < n) {
      try {
        for (; i < n; i++) {
          const token = eventToken(events, i);
          this.#handlers[token]?.onEvents(eventMask(events, i), token);
        }
      } catch (err) {
        this.#onHandlerError(err, eventToken(events, i));
        i++;
      }
    }
    this.#dispatching = false;
    const freed = this.#freedThisBatch;
    while (freed.length > 0) this.#free.push(freed.pop() as number);
    runTicks();
  }
}

function runTicks(): void {
  try {
    runNextTicks?.();
  } catch (err) {
    rethrowLater(err);
  }
}

/**
 * An exception must not unwind through libuv (koffi would turn it into a return value and drop it): throw it again
 * from a callback Node makes itself, so it is an uncaught exception like any other.
 */
function rethrowLater(err: unknown): void {
  setImmediate(() => {
    throw err;
  });
}
