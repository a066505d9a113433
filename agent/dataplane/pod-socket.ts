/**
 * Sockets a worker opens on a pod's behalf: made inside the pod's network namespace (through the descriptor the
 * agent holds for it, never a /proc path), marked so the pod's own rules let them through, non-blocking, and
 * connected on the worker's loop. Used for the app side of every relay and for HBONE dials.
 */
import {
  connect,
  EINPROGRESS,
  EPOLLOUT,
  getpeername,
  IPPROTO_TCP,
  setIntOption,
  socketError,
  TCP_NODELAY,
} from "../../native-bindings/io.js";
import { encodeSockaddr } from "../../native-bindings/sockaddr.js";
import type { LineLog } from "../log.js";
import { type HeldNetnsRef, socketInPodFd } from "../pod-netns.js";
import type { EventHandler, Reactor } from "./reactor.js";

export interface PodDial {
  address: string;
  port: number;
  /** Interface index of an IPv6 link-local destination. */
  scopeId?: number;
}

export interface DialOptions {
  mark: number;
  /** SO_SNDBUF and SO_RCVBUF; 0 leaves the kernel's autotuning on. */
  socketBuffer: number;
}

/**
 * A socket made inside `netns` for a connection to `dst`, not connected yet (startConnect): the fd, the caller's to
 * close. A socket that cannot be made at all throws (SyscallError). TCP_NODELAY: the proxy forwards what it has as
 * soon as it has it; a held-back small segment would meet the peer's delayed ACK (40 ms stalls on request/response
 * traffic).
 */
export function dialFromPod(netns: HeldNetnsRef, dst: PodDial, options: DialOptions, log: LineLog): number {
  const buffers = options.socketBuffer;
  const fd = socketInPodFd(
    netns,
    {
      address: dst.address,
      port: dst.port,
      mark: options.mark,
      ...(dst.scopeId ? { scopeId: dst.scopeId } : {}),
      ...(buffers ? { sendBuffer: buffers, receiveBuffer: buffers } : {}),
    },
    log,
  );
  setIntOption(fd, IPPROTO_TCP, TCP_NODELAY, 1);
  return fd;
}

/** Starts the connect of `fd` to `dst`: 0 (done), -EINPROGRESS (finishes later) or another -errno (failed). */
export function startConnect(fd: number, dst: PodDial): number {
  return connect(fd, encodeSockaddr(dst.address, dst.port));
}

/**
 * Calls `done(errno)` once the connect started on `fd` is decided: 0 when connected, the connect's errno when it
 * failed, ETIMEDOUT (110) when it took longer than `timeoutMs`. The fd stays the caller's; it is in the reactor's
 * set only while waiting. cancel() stops waiting without calling back.
 */
export function whenConnected(
  reactor: Reactor,
  fd: number,
  started: number,
  timeoutMs: number,
  done: (errno: number) => void,
): { cancel(): void } {
  const decided = started === -EINPROGRESS ? decidedAlready(fd) : started === 0 ? 0 : -started;
  if (decided !== undefined) {
    let cancelled = false;
    queueMicrotask(() => {
      if (!cancelled) done(decided);
    });
    return {
      cancel: () => {
        cancelled = true;
      },
    };
  }
  const waiter = new ConnectWaiter(reactor, fd, timeoutMs, done);
  return { cancel: () => waiter.finish(-1) };
}

const ETIMEDOUT = 110;

/**
 * A connect to an address of the same host (an app in its own pod, a pod on the same node) is usually decided
 * before connect(2) has even returned EINPROGRESS is read: the handshake runs in the kernel at once. Asking costs
 * one or two system calls, where waiting costs an epoll_ctl to watch, a loop turn and an epoll_ctl to stop: the
 * connect's errno if it failed, 0 if the socket has a peer (connected), undefined while it is still under way.
 */
function decidedAlready(fd: number): number | undefined {
  const err = socketError(fd);
  if (err !== 0) return err < 0 ? -err : err;
  return getpeername(fd) === undefined ? undefined : 0;
}

class ConnectWaiter implements EventHandler {
  readonly #reactor: Reactor;
  readonly #fd: number;
  readonly #token: number;
  readonly #timer: NodeJS.Timeout;
  #done: ((errno: number) => void) | undefined;

  constructor(reactor: Reactor, fd: number, timeoutMs: number, done: (errno: number) => void) {
    this.#reactor = reactor;
    this.#fd = fd;
    this.#done = done;
    this.#token = reactor.add(fd, EPOLLOUT, this);
    this.#timer = setTimeout(() => this.finish(ETIMEDOUT), timeoutMs);
  }

  onEvents(): void {
    const err = socketError(this.#fd);
    this.finish(err < 0 ? -err : err);
  }

  /** Stops waiting; calls back with `errno` unless it is -1 (cancelled). */
  finish(errno: number): void {
    const done = this.#done;
    if (!done) return;
    this.#done = undefined;
    clearTimeout(this.#timer);
    this.#reactor.remove(this.#token);
    if (errno >= 0) done(errno);
  }
}
