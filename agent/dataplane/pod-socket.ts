/**
 * Sockets a worker opens on a pod's behalf: made inside the pod's network namespace (through the descriptor the
 * agent holds for it, never a /proc path), marked so the pod's own rules let them through, non-blocking, and
 * connected on the worker's loop. Used for the app side of every relay and for HBONE dials.
 */
import { isIPv4, isIPv6 } from "node:net";
import {
  bindTo,
  closeFd,
  connect,
  EADDRINUSE,
  EADDRNOTAVAIL,
  EINPROGRESS,
  EPOLLOUT,
  getpeername,
  IPPROTO_TCP,
  setIntOption,
  socketError,
  TCP_NODELAY,
} from "../../native-bindings/io.js";
import { encodeSockaddr } from "../../native-bindings/sockaddr.js";
import { canonicalIp } from "../kube/ip.js";
import type { LineLog } from "../log.js";
import { type HeldNetnsRef, socketInPodFd } from "../pod-netns.js";
import type { EventHandler, Reactor } from "./reactor.js";

export interface PodDial {
  address: string;
  port: number;
  /** Interface index of an IPv6 link-local destination. */
  scopeId?: number;
  /**
   * The caller's address, for a connection to the pod's app that should come from it (appSource): the socket is
   * transparent and bound to it, so the app sees who called instead of its own pod IP.
   */
  source?: string;
}

export interface DialOptions {
  mark: number;
  /** A socket to bind to an address that is not the pod's (dialTransparent). */
  transparent?: boolean;
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
      ...(options.transparent ? { transparent: true } : {}),
      ...(dst.scopeId ? { scopeId: dst.scopeId } : {}),
      ...(buffers ? { sendBuffer: buffers, receiveBuffer: buffers } : {}),
    },
    log,
  );
  setIntOption(fd, IPPROTO_TCP, TCP_NODELAY, 1);
  return fd;
}

/**
 * The address the agent's connection to the app comes from: the caller's, so the app's logs, rate limits and allow
 * lists see who called. Undefined (the pod's own address, chosen by the kernel) when the caller is the target
 * itself (a pod calling itself through its Service: the kernel picks that address anyway), when the families differ
 * (there is no such source), or when either side is IPv6 link-local: a caller's scope is an interface outside the
 * pod, and a link-local target is reached through the pod's interface, where the route back to the agent (on lo)
 * does not apply.
 */
export function appSource(caller: string, target: string): string | undefined {
  const from = canonicalIp(caller);
  if (from === undefined || from === canonicalIp(target)) return undefined;
  if (isIPv4(from)) return isIPv4(target) ? from : undefined;
  return isIPv6(target) && !isLinkLocal(from) && !isLinkLocal(target) ? caller : undefined;
}

function isLinkLocal(ip: string): boolean {
  return /^fe[89ab]/i.test(ip);
}

const SOURCE_PORT_ATTEMPTS = 4;

/**
 * A source port for a transparent connection, below Linux's default ephemeral range (32768-60999), where callers'
 * own ports come from. The pod's inbound REDIRECT keeps a conntrack entry per captured plaintext connection, keyed
 * by the caller's address and port: an agent connection from the same address and port to the same app port would
 * match that entry and be redirected to the agent's own listener. A port the kernel would choose (from the ephemeral
 * range) meets one of the caller's live ports with a chance of its open connections in 28,000: 200 concurrent
 * connections from one pod hung at least one on each run (caller-address.test.ts). These ports do not, for callers
 * with Linux's default range.
 */
export function transparentSourcePort(random: () => number = Math.random): number {
  return 1024 + Math.floor(random() * (32768 - 1024));
}

/**
 * dialFromPod + startConnect from `source`: the socket is transparent and bound to a port from
 * transparentSourcePort, tried again with another port when that one is taken. A bind or connect that fails for
 * any other reason is returned as `started` (-errno), so the caller refuses the connection: it is never made from
 * the pod's own address instead, which would hand the app a caller it did not have. `options` must ask for a
 * transparent socket.
 */
export function dialTransparent(
  netns: HeldNetnsRef,
  dst: PodDial,
  source: string,
  options: DialOptions,
  log: LineLog,
): { fd: number; started: number } {
  for (let attempt = 1; ; attempt++) {
    const fd = dialFromPod(netns, dst, options, log);
    const bound = bindTo(fd, encodeSockaddr(source, transparentSourcePort()));
    const started = bound < 0 ? bound : startConnect(fd, dst);
    const taken = started === -EADDRINUSE || started === -EADDRNOTAVAIL;
    if (!taken || attempt === SOURCE_PORT_ATTEMPTS) return { fd, started };
    closeFd(fd);
  }
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
