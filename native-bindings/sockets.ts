import net from "node:net";
import {
  AF_INET,
  AF_INET6,
  bind,
  closeFdQuietly,
  getsockoptBuffer,
  IP_TRANSPARENT,
  IPPROTO_TCP,
  IPV6_TRANSPARENT,
  IPV6_V6ONLY,
  listen,
  SO_BINDTOIFINDEX,
  SO_KEEPALIVE,
  SO_MARK,
  SO_ORIGINAL_DST,
  SO_RCVBUF,
  SO_REUSEADDR,
  SO_REUSEPORT,
  SO_SNDBUF,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOL_IP,
  SOL_IPV6,
  SOL_SOCKET,
  setsockoptInt,
  socket,
  TCP_KEEPCNT,
  TCP_KEEPIDLE,
  TCP_KEEPINTVL,
  TCP_USER_TIMEOUT,
} from "./libc.js";
import { inNetns, inNetnsFd } from "./netns.js";
import { decodeSockaddr, type Endpoint, encodeSockaddr, familyOf } from "./sockaddr.js";

export type { Endpoint };

function tcpSocket(family: 4 | 6): number {
  return socket(family === 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC);
}

export { closeFdQuietly };

/**
 * Accept queue of ambit's listeners. Node calls listen(2) again on an fd it is handed, with 511 unless a backlog
 * is passed as the second argument (`server.listen({ fd }, LISTEN_BACKLOG)`; Node reads no `backlog` option for an
 * fd): with 511, 1000 connects while the loop was busy overflowed the queue (6,262 ListenOverflows in the pod) and
 * 141 connections were reset.
 */
export const LISTEN_BACKLOG = 4096;

export interface ListenerOptions {
  address: string;
  port: number;
  backlog?: number;
  /** IP_TRANSPARENT: accept connections to addresses that are not local (TPROXY). */
  transparent?: boolean;
  /**
   * SO_REUSEPORT: several listeners on the same address, the kernel spreading connections by a hash of the
   * 4-tuple. In-pod listeners use it so a new agent can listen beside the old one during an upgrade
   * (agent/redirect/enroller.ts); within one agent the workers share one fd instead (worker-pool.ts).
   */
  reusePort?: boolean;
}

/**
 * A listening TCP socket, created in the calling thread's current network namespace.
 * Hand the fd to Node with `server.listen({ fd }, LISTEN_BACKLOG)`.
 */
export function openListenerFd(options: ListenerOptions): number {
  const family = familyOf(options.address);
  const fd = tcpSocket(family);
  const where = `${options.address}:${options.port}`;
  try {
    setsockoptInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, where);
    if (options.reusePort) setsockoptInt(fd, SOL_SOCKET, SO_REUSEPORT, 1, where);
    if (family === 6) setsockoptInt(fd, SOL_IPV6, IPV6_V6ONLY, 1, where);
    if (options.transparent) {
      setsockoptInt(fd, family === 4 ? SOL_IP : SOL_IPV6, family === 4 ? IP_TRANSPARENT : IPV6_TRANSPARENT, 1, where);
    }
    bind(fd, encodeSockaddr(options.address, options.port), where);
    listen(fd, options.backlog ?? LISTEN_BACKLOG);
    return fd;
  } catch (err) {
    closeFdQuietly(fd);
    throw err;
  }
}

/** openListenerFd inside the namespace at `netnsPath`. */
export function openListenerFdInNetns(netnsPath: string, options: ListenerOptions): number {
  return inNetns(netnsPath, () => openListenerFd(options));
}

export interface MarkedConnectOptions {
  address: string;
  port: number;
  /** SO_MARK, so the namespace's own redirect rules let this connection through. */
  mark: number;
  /** Kernel socket buffer sizes; left to the kernel's autotuning when absent. */
  sendBuffer?: number;
  receiveBuffer?: number;
  /** Give up (code ETIMEDOUT) if the connection is not up in this many ms; else the kernel's SYN retries decide. */
  timeoutMs?: number;
  /**
   * Interface index (in that namespace) for an IPv6 link-local address, which has no meaning without one. Node's
   * own `%zone` resolves the interface by name in the agent's namespace, not the pod's, so the socket is bound to
   * the interface here instead.
   */
  scopeId?: number;
  /**
   * IP_TRANSPARENT (IPV6_TRANSPARENT) and SO_REUSEADDR, for a socket the caller binds to an address that is not
   * the namespace's own (the caller's, so the app sees it): transparency allows the bind, and SO_REUSEADDR lets
   * several such sockets share a source port toward different destinations.
   */
  transparent?: boolean;
}

/**
 * A marked TCP connection from inside `netnsPath`, so it leaves with the pod's source IP. The socket is created in
 * the namespace (a socket keeps the namespace it was created in) and connected by Node itself, so a refused or
 * unreachable connection rejects with Node's usual error (code ECONNREFUSED, EHOSTUNREACH, ...). Half-open: a proxy
 * must forward one side's FIN without closing the other direction.
 */
export function connectInNetns(netnsPath: string, options: MarkedConnectOptions): Promise<net.Socket> {
  return connectMarked(
    inNetns(netnsPath, () => markedSocket(options)),
    options,
  );
}

/**
 * connectInNetns from inside the namespace open at `netnsFd` (openNetns): no open/close of a path per connection,
 * and no chance that a /proc/PID path names another process's namespace by the time it is opened.
 */
export function connectInNetnsFd(
  netnsFd: number,
  options: MarkedConnectOptions,
  description?: string,
): Promise<net.Socket> {
  return connectMarked(
    inNetnsFd(netnsFd, () => markedSocket(options), description),
    options,
  );
}

/**
 * A marked, non-blocking TCP socket created inside the namespace open at `netnsFd`, not connected yet: the data
 * plane's workers connect it on their own loop (agent/dataplane/pod-socket.ts).
 */
export function markedSocketInNetnsFd(netnsFd: number, options: MarkedConnectOptions, description?: string): number {
  return inNetnsFd(netnsFd, () => markedSocket(options), description);
}

/** The unconnected, marked socket, created in the calling thread's current namespace. */
function markedSocket(options: MarkedConnectOptions): number {
  const where = `${options.address}:${options.port}`;
  const family = familyOf(options.address);
  const s = tcpSocket(family);
  try {
    setsockoptInt(s, SOL_SOCKET, SO_MARK, options.mark, where);
    if (options.transparent) {
      setsockoptInt(s, SOL_SOCKET, SO_REUSEADDR, 1, where);
      setsockoptInt(s, family === 4 ? SOL_IP : SOL_IPV6, family === 4 ? IP_TRANSPARENT : IPV6_TRANSPARENT, 1, where);
    }
    if (options.sendBuffer) setsockoptInt(s, SOL_SOCKET, SO_SNDBUF, options.sendBuffer, where);
    if (options.receiveBuffer) setsockoptInt(s, SOL_SOCKET, SO_RCVBUF, options.receiveBuffer, where);
    if (options.scopeId) setsockoptInt(s, SOL_SOCKET, SO_BINDTOIFINDEX, options.scopeId, where);
    return s;
  } catch (err) {
    closeFdQuietly(s);
    throw err;
  }
}

function connectMarked(fd: number, options: MarkedConnectOptions): Promise<net.Socket> {
  const where = `${options.address}:${options.port}`;
  // manualStart (Node's own option for sockets it connects later) keeps it from reading an unconnected socket;
  // connect() then reuses this handle and starts reading once connected.
  const socket = new net.Socket({ fd, allowHalfOpen: true, manualStart: true } as net.SocketConstructorOpts);
  return new Promise((resolve, reject) => {
    const failed = (err: Error) => {
      clearTimeout(timer);
      reject(err);
    };
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            const err = Object.assign(new Error(`connect to ${where} timed out after ${options.timeoutMs} ms`), {
              code: "ETIMEDOUT",
            });
            socket.destroy(err);
          }, options.timeoutMs);
    socket.once("error", failed);
    socket.connect({ host: options.address, port: options.port }, () => {
      clearTimeout(timer);
      socket.off("error", failed);
      resolve(socket);
    });
  });
}

/**
 * The destination a connection had before REDIRECT rewrote it (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST).
 * `fd` is an accepted socket's descriptor; `family` the family of the listener that accepted it.
 */
export function originalDestination(fd: number, family: 4 | 6): Endpoint {
  const buf =
    family === 4
      ? getsockoptBuffer(fd, SOL_IP, SO_ORIGINAL_DST, 16)
      : getsockoptBuffer(fd, SOL_IPV6, SO_ORIGINAL_DST, 28);
  return decodeSockaddr(buf);
}

/** TCP keepalive on `fd`: first probe after `idleSeconds` of silence, then every `intervalSeconds`, `count` in all. */
export function setKeepalive(fd: number, idleSeconds: number, intervalSeconds: number, count: number): void {
  setsockoptInt(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
  setsockoptInt(fd, IPPROTO_TCP, TCP_KEEPIDLE, idleSeconds);
  setsockoptInt(fd, IPPROTO_TCP, TCP_KEEPINTVL, intervalSeconds);
  setsockoptInt(fd, IPPROTO_TCP, TCP_KEEPCNT, count);
}

/** TCP_USER_TIMEOUT: the connection is dropped once sent data has gone unacknowledged for `ms` milliseconds. */
export function setUserTimeout(fd: number, ms: number): void {
  setsockoptInt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, ms);
}

/** The fd behind a net.Socket (only for TCP sockets libuv owns; undefined once closed). */
export function socketFd(sock: net.Socket): number | undefined {
  const handle = (sock as unknown as { _handle?: { fd?: number } })._handle;
  return handle?.fd !== undefined && handle.fd >= 0 ? handle.fd : undefined;
}
