import { errnoName, SyscallError } from "../../native-bindings/errors.js";
import {
  AF_INET,
  AF_INET6,
  connect,
  EAGAIN,
  EINPROGRESS,
  EINTR,
  EPOLLERR,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
  IPPROTO_TCP,
  read,
  SHUT_WR,
  setIntOption,
  setLingerZero,
  shutdown,
  socketError,
  TCP_NODELAY,
  tcpSocket,
  write,
} from "../../native-bindings/io.js";
import { encodeSockaddr, familyOf } from "../../native-bindings/sockaddr.js";
import { AmbitError } from "../errors.js";
import { closeSocket, resetFd } from "./fd.js";
import type { EventHandler, Reactor } from "./reactor.js";
import { COUNTER, type WorkerCounters } from "./shared-counters.js";

/**
 * Bytes taken per read. One buffer per relay (one relay per worker thread), shared by all its connections: a byte
 * read is written on at once, and only what the other socket could not take is copied into a pending buffer of its
 * own. So an idle or flowing connection holds no user-space buffer, and 10,000 connections cost 10,000 small
 * objects, not 10,000 x 2 x 64 KiB (1.3 GB).
 */
const READ_BUFFER_BYTES = 64 * 1024;

/** Reads per readiness event at most (level-triggered epoll reports the rest), so one fast sender cannot starve others. */
const READS_PER_EVENT = 8;

export interface RelayTarget {
  address: string;
  port: number;
}

export interface RelayOptions {
  /** Where relay() connects every client; a relay that is given its upstream sockets (relayTo) needs none. */
  target?: RelayTarget;
  /** A connect that has not completed by then is abandoned and the client reset. */
  connectTimeoutMs: number;
  /** The worker's counter row (shared with the main thread's metrics); every relay of the worker counts into it. */
  counters: WorkerCounters;
  /** Hears why a connection ended abnormally (connect refused or timed out, no descriptor); counted either way. */
  onError?: (err: AmbitError) => void;
}

/** One relayed connection, for a caller that may have to end it early (an AuthorizationPolicy revoked). */
export interface RelayedConnection {
  /** Ends it once (a no-op once ended): both fds closed, with a RST to each peer when `reset`. */
  end(reset: boolean, error?: string): void;
}

/** How one connection ended, for its access log (relayTo's onDone). */
export interface ConnectionResult {
  /** Bytes written to the upstream socket (read from the client). */
  toUpstream: number;
  /** Bytes written to the client socket (read from the upstream). */
  toClient: number;
  /** Ended by an error or a reset (passed on as a RST to both), not by EOF both ways. */
  reset: boolean;
  /** Why, when reset: "connect failed: ECONNREFUSED", "client read failed: ECONNRESET", ... */
  error?: string;
}

/** A snapshot of the relay counters of a worker's row (all its relays), for tests and the worker's stats reply. */
export interface RelayStats {
  opened: number;
  /** Ended by EOF both ways, every byte delivered. */
  closed: number;
  /** Ended by an error or RST on one side, passed on as a RST to the other. */
  reset: number;
  connectFailed: number;
  connectTimedOut: number;
  /** No socket for the upstream side (EMFILE, ENFILE, ENOBUFS): the client was reset. */
  socketFailed: number;
  /** Times a write took less than was read, so bytes were kept and reading that direction paused. */
  backpressured: number;
  /** Bytes written to upstream sockets (read from clients). */
  upstreamBytes: number;
  /** Bytes written to client sockets (read from upstreams). */
  downstreamBytes: number;
}

export function relayStats(counters: WorkerCounters): RelayStats {
  return {
    opened: counters.get(COUNTER.connections_opened),
    closed: counters.get(COUNTER.connections_closed),
    reset: counters.get(COUNTER.connections_reset),
    connectFailed: counters.get(COUNTER.connect_failures),
    connectTimedOut: counters.get(COUNTER.connect_timeouts),
    socketFailed: counters.get(COUNTER.socket_failures),
    backpressured: counters.get(COUNTER.backpressured),
    upstreamBytes: counters.get(COUNTER.upstream_bytes),
    downstreamBytes: counters.get(COUNTER.downstream_bytes),
  };
}

/**
 * A plaintext TCP relay on a Reactor: each accepted client fd handed to `relay()` is connected to the target (or
 * handed with its own upstream socket to `relayTo()`) and bytes flow both ways with backpressure, half-close and
 * reset propagation.
 */
export class TcpRelay {
  readonly reactor: Reactor;
  readonly counters: WorkerCounters;
  readonly buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
  readonly options: RelayOptions;
  readonly #targetAddr: Buffer | undefined;
  readonly #family: number;
  readonly #connections = new Set<Connection>();

  constructor(reactor: Reactor, options: RelayOptions) {
    this.reactor = reactor;
    this.options = options;
    this.counters = options.counters;
    const target = options.target;
    this.#targetAddr = target ? encodeSockaddr(target.address, target.port) : undefined;
    this.#family = target && familyOf(target.address) === 6 ? AF_INET6 : AF_INET;
  }

  /** Connections open now (each holds two fds, one while its client is being refused). */
  get live(): number {
    return this.#connections.size;
  }

  /** The worker row's relay counters now. */
  stats(): RelayStats {
    return relayStats(this.counters);
  }

  /** Takes ownership of `clientFd` (non-blocking) and relays it to the target of the options. */
  relay(clientFd: number): void {
    const addr = this.#targetAddr;
    if (addr === undefined) {
      resetFd(clientFd);
      throw new AmbitError("relay_no_target", "relay() on a TcpRelay without a target; use relayTo()");
    }
    const upstreamFd = tcpSocket(this.#family);
    if (upstreamFd < 0) {
      this.counters.inc(COUNTER.socket_failures);
      resetFd(clientFd);
      this.#report(
        this.options.target,
        "relay_socket_failed",
        "no socket for the upstream side; client reset",
        -upstreamFd,
      );
      return;
    }
    // Request/response traffic: a small write must leave at once, not wait for an ACK (Nagle).
    setIntOption(upstreamFd, IPPROTO_TCP, TCP_NODELAY, 1);
    this.#start(clientFd, upstreamFd, connect(upstreamFd, addr), this.options.target, undefined);
  }

  /**
   * Takes ownership of `clientFd` and `upstreamFd` (both non-blocking) and relays one to the other. The caller made
   * the upstream socket (in a pod's namespace, its options set: dialFromPod) and started its connect: `started` is
   * connect(2)'s result, 0, -EINPROGRESS or -errno (startConnect in pod-socket.ts); a failed or timed-out connect
   * resets the client. `onDone` hears once how the connection ended; without it a connection costs no closure.
   */
  relayTo(
    clientFd: number,
    upstreamFd: number,
    started: number,
    onDone?: (result: ConnectionResult) => void,
  ): RelayedConnection {
    return this.#start(clientFd, upstreamFd, started, undefined, onDone);
  }

  /** Resets every connection (the worker is stopping). */
  closeAll(): void {
    for (const conn of this.#connections) conn.end(true, "relay closed");
  }

  /** @internal Called once per connection, when it ends. */
  ended(conn: Connection): void {
    this.#connections.delete(conn);
  }

  /** @internal */
  report(target: RelayTarget | undefined, code: string, message: string, errno: number): void {
    this.#report(target, code, message, errno);
  }

  #start(
    clientFd: number,
    upstreamFd: number,
    started: number,
    target: RelayTarget | undefined,
    onDone: ((result: ConnectionResult) => void) | undefined,
  ): Connection {
    const conn = new Connection(this, clientFd, upstreamFd, target, onDone);
    this.#connections.add(conn);
    this.counters.inc(COUNTER.connections_opened);
    conn.start(started);
    return conn;
  }

  #report(target: RelayTarget | undefined, code: string, message: string, errno: number): void {
    const onError = this.options.onError;
    if (!onError) return;
    const where = target ? ` to ${target.address}:${target.port}` : "";
    onError(new AmbitError(code, `relay${where}: ${message}`, { cause: new SyscallError("relay", errno) }));
  }
}

/** A socket we own: the only place its fd is closed, and only once (fd becomes -1). */
class Side implements EventHandler {
  fd: number;
  readonly conn: Connection;
  /** The counter that bytes written to this socket go to (upstream_bytes or downstream_bytes). */
  readonly bytesCounter: number;
  /** Bytes written to this socket. */
  bytes = 0;
  peer!: Side;
  token = -1;
  /** The mask epoll has for this fd now. */
  mask = 0;
  /**
   * Not in the epoll set: taken out after a hang-up while nothing was wanted from it (see Connection.#park), or not
   * added yet (a client until its upstream is connected). #sync adds it once something is wanted.
   */
  parked = false;
  /** Bytes read from the peer that this socket has not taken yet; reading the peer waits until they are written. */
  pending: Buffer | null = null;
  pendingOffset = 0;
  /** EOF read from this socket. */
  eof = false;
  /** shutdown(SHUT_WR) sent to this socket (its peer's EOF, passed on after every pending byte). */
  shutSent = false;

  constructor(conn: Connection, fd: number, bytesCounter: number) {
    this.conn = conn;
    this.fd = fd;
    this.bytesCounter = bytesCounter;
  }

  onEvents(events: number): void {
    this.conn.onEvents(this, events);
  }

  close(reactor: Reactor, reset: boolean): void {
    if (this.fd < 0) return;
    if (this.token >= 0 && !this.parked) reactor.forget(this.token);
    this.token = -1;
    if (reset) setLingerZero(this.fd);
    closeSocket(this.fd);
    this.fd = -1;
  }
}

class Connection implements RelayedConnection {
  readonly #relay: TcpRelay;
  readonly #client: Side;
  readonly #upstream: Side;
  /** relay()'s fixed target, named in error reports; relayTo's callers know their own. */
  readonly #target: RelayTarget | undefined;
  readonly #onDone: ((result: ConnectionResult) => void) | undefined;
  #connecting = true;
  #ended = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    relay: TcpRelay,
    clientFd: number,
    upstreamFd: number,
    target: RelayTarget | undefined,
    onDone: ((result: ConnectionResult) => void) | undefined,
  ) {
    this.#relay = relay;
    this.#target = target;
    this.#onDone = onDone;
    this.#client = new Side(this, clientFd, COUNTER.downstream_bytes);
    this.#upstream = new Side(this, upstreamFd, COUNTER.upstream_bytes);
    this.#client.peer = this.#upstream;
    this.#upstream.peer = this.#client;
  }

  /** `r`: the upstream connect's result so far (0, -EINPROGRESS or -errno). */
  start(r: number): void {
    const reactor = this.#relay.reactor;
    // Request/response traffic: a small write must leave at once, not wait for an ACK (Nagle).
    setIntOption(this.#client.fd, IPPROTO_TCP, TCP_NODELAY, 1);
    if (r < 0 && r !== -EINPROGRESS) {
      this.#connectFailed(-r);
      return;
    }
    // The client joins the epoll set once the upstream is connected (its bytes wait in the kernel meanwhile): one
    // epoll_ctl per connection less than adding it with an empty mask first. A client reset during the connect is
    // seen then, and the connect timeout bounds the wait.
    this.#client.parked = true;
    try {
      this.#upstream.mask = r === 0 ? 0 : EPOLLOUT;
      this.#upstream.token = reactor.add(this.#upstream.fd, this.#upstream.mask, this.#upstream);
    } catch (err) {
      this.end(true, "upstream not watched");
      throw err;
    }
    if (r === 0) this.#connected();
    else this.#timer = setTimeout(connectTimedOut, this.#relay.options.connectTimeoutMs, this);
  }

  onEvents(side: Side, events: number): void {
    if (this.#ended) return;
    if (this.#connecting) {
      // Only the upstream is in the epoll set while connecting: writable or failed means the connect is decided.
      const err = socketError(side.fd);
      if (err === 0) this.#connected();
      else this.#connectFailed(err < 0 ? -err : err);
      return;
    }
    if (events & EPOLLERR) {
      this.#failed(side, "socket");
      return;
    }
    if (events & EPOLLOUT) {
      this.#flush(side);
      if (this.#ended) return;
    }
    if (events & (EPOLLIN | EPOLLHUP)) {
      if (side.mask & EPOLLIN) this.#pump(side);
      else if (!(side.mask & EPOLLOUT)) this.#park(side);
    }
  }

  /** Ends the connection once: both fds closed, with a RST to each peer when `reset` (`error` says why). */
  end(reset: boolean, error?: string): void {
    if (this.#ended) return;
    this.#ended = true;
    clearTimeout(this.#timer);
    const reactor = this.#relay.reactor;
    this.#client.close(reactor, reset);
    this.#upstream.close(reactor, reset);
    this.#client.pending = null;
    this.#upstream.pending = null;
    this.#relay.counters.inc(reset ? COUNTER.connections_reset : COUNTER.connections_closed);
    this.#relay.ended(this);
    const onDone = this.#onDone;
    if (onDone === undefined) return;
    const result: ConnectionResult = { toUpstream: this.#upstream.bytes, toClient: this.#client.bytes, reset };
    if (error !== undefined) result.error = error;
    onDone(result);
  }

  timedOut(): void {
    this.#timer = undefined;
    if (this.#ended || !this.#connecting) return;
    this.#relay.counters.inc(COUNTER.connect_timeouts);
    this.#relay.report(this.#target, "relay_connect_timeout", "connect timed out; client reset", 110);
    this.end(true, "connect timed out");
  }

  #connected(): void {
    this.#connecting = false;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#sync(this.#client);
    this.#sync(this.#upstream);
  }

  #connectFailed(errno: number): void {
    this.#relay.counters.inc(COUNTER.connect_failures);
    this.#relay.report(
      this.#target,
      "relay_connect_failed",
      `connect failed (${errnoName(errno)}); client reset`,
      errno,
    );
    this.end(true, `connect failed: ${errnoName(errno)}`);
  }

  /** Reads `src` and writes to its peer until EAGAIN, EOF, a short write (backpressure) or the per-event bound. */
  #pump(src: Side): void {
    const dst = src.peer;
    const buf = this.#relay.buffer;
    for (let i = 0; i < READS_PER_EVENT; i++) {
      const n = read(src.fd, buf, buf.length);
      if (n > 0) {
        const w = write(dst.fd, buf, n);
        if (w === n) {
          this.#relay.counters.add(dst.bytesCounter, n);
          dst.bytes += n;
          if (n < buf.length) return;
          continue;
        }
        if (w < 0 && w !== -EAGAIN && w !== -EINTR) {
          this.#failed(dst, "write", -w);
          return;
        }
        const taken = Math.max(w, 0);
        this.#relay.counters.add(dst.bytesCounter, taken);
        dst.bytes += taken;
        this.#relay.counters.inc(COUNTER.backpressured);
        dst.pending = Buffer.allocUnsafe(n - taken);
        buf.copy(dst.pending, 0, taken, n);
        dst.pendingOffset = 0;
        this.#sync(src);
        this.#sync(dst);
        return;
      }
      if (n === 0) {
        src.eof = true;
        // Pass the EOF on first: when it was the last direction open, the connection ends and src needs no
        // epoll_ctl to stop reading it.
        if (dst.pending === null) this.#shutWrite(dst);
        if (!this.#ended) this.#sync(src);
        return;
      }
      if (n === -EAGAIN) return;
      if (n !== -EINTR) {
        this.#failed(src, "read", -n);
        return;
      }
    }
  }

  /** Writes what `dst` has pending; once all is written, reading its peer resumes (or its EOF is passed on). */
  #flush(dst: Side): void {
    while (dst.pending !== null) {
      const pending = dst.pending;
      const rest = pending.length - dst.pendingOffset;
      const w = write(dst.fd, dst.pendingOffset === 0 ? pending : pending.subarray(dst.pendingOffset), rest);
      if (w >= 0) {
        this.#relay.counters.add(dst.bytesCounter, w);
        dst.bytes += w;
      }
      if (w === rest) {
        dst.pending = null;
        dst.pendingOffset = 0;
      } else if (w >= 0) {
        dst.pendingOffset += w;
        return;
      } else if (w === -EAGAIN) {
        return;
      } else if (w !== -EINTR) {
        this.#failed(dst, "write", -w);
        return;
      }
    }
    const src = dst.peer;
    if (src.eof) {
      this.#shutWrite(dst);
      if (this.#ended) return;
    }
    this.#sync(dst);
    if (!src.eof) this.#sync(src);
  }

  /** A socket failed (`errno`; after EPOLLERR, its SO_ERROR): the connection ends with a reset. */
  #failed(side: Side, call: string, errno?: number): void {
    // The reason is spelled out only for a caller that hears it.
    if (this.#onDone === undefined) {
      this.end(true);
      return;
    }
    const e = Math.abs(errno ?? socketError(side.fd));
    const name = side === this.#client ? "client" : "upstream";
    this.end(true, `${name} ${call} failed: ${e === 0 ? "reset" : errnoName(e)}`);
  }

  /** Passes an EOF on; the connection ends cleanly once both directions have. */
  #shutWrite(dst: Side): void {
    if (dst.shutSent) return;
    dst.shutSent = true;
    shutdown(dst.fd, SHUT_WR);
    if (this.#client.shutSent && this.#upstream.shutSent) this.end(false);
  }

  /** Makes epoll watch what `side` needs now: reading unless its peer has bytes pending, writing while it has. */
  #sync(side: Side): void {
    let mask = 0;
    if (!side.eof && side.peer.pending === null) mask |= EPOLLIN;
    if (side.pending !== null) mask |= EPOLLOUT;
    if (side.parked) {
      if (mask === 0) return;
      side.parked = false;
      side.mask = mask;
      side.token = this.#relay.reactor.add(side.fd, mask, side);
      return;
    }
    if (mask === side.mask) return;
    side.mask = mask;
    this.#relay.reactor.modify(side.token, mask);
  }

  /**
   * A socket whose peer shut both directions reports EPOLLHUP whatever mask it has. While the relay is not reading
   * it (its peer is backpressured), that would wake the loop on every turn: take it out of the epoll set until it
   * is wanted again (#sync adds it back).
   */
  #park(side: Side): void {
    this.#relay.reactor.remove(side.token);
    side.token = -1;
    side.parked = true;
  }
}

function connectTimedOut(conn: Connection): void {
  conn.timedOut();
}
