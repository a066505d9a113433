import { errnoName } from "../../native-bindings/errors.js";
import {
  EPOLLERR,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
  IPPROTO_TCP,
  SHUT_WR,
  setIntOption,
  shutdown,
  socketError,
  TCP_NODELAY,
} from "../../native-bindings/io.js";
import type { Transport, TransportSink } from "../h2/transport.js";
import type { PeerValidation } from "../identity/validate.js";
import { closeSocket } from "./fd.js";
import type { EventHandler, Reactor } from "./reactor.js";
import {
  RECORD_BYTES,
  SEND_BYTES,
  TLS_EOF,
  TLS_EOF_UNCLEAN,
  TLS_WANT_READ,
  TLS_WANT_WRITE,
  TlsConnection,
  type TlsRole,
} from "./tls/connection.js";
import type { TlsContext } from "./tls/context.js";
import { TlsError } from "./tls/errors.js";

/** Decrypted bytes handed to the session per receive: up to four records are gathered before one receive call. */
const READ_BUFFER_BYTES = 64 * 1024;
/** Bytes read per readiness event at most, so one busy connection cannot starve the others on the loop. */
const READ_BYTES_PER_EVENT = 4 * READ_BUFFER_BYTES;
/**
 * Plaintext waiting for the socket at or above which the session holds back DATA (control frames never wait): the
 * same bound as HTTP/2 over a Node socket (agent/h2/socket-transport.ts), so a session's memory is bounded alike.
 */
export const TLS_HIGH_WATER = 1024 * 1024;
/** After end(), how long the peer gets to close its side before the connection is dropped. */
export const DEFAULT_CLOSE_TIMEOUT_MS = 10_000;

/**
 * ONE read buffer per thread (module state is per worker thread): every connection of the thread reads into it and
 * hands a view of it to its session (lendsReads), which copies only what it keeps. 10,000 sessions hold no read
 * buffer of their own.
 */
const readBuffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
/** A read pass is handing readBuffer to a session: a nested one (a session started from a receive) waits a turn. */
let readBufferBusy = false;

export interface TlsTransportOptions {
  reactor: Reactor;
  context: TlsContext;
  /**
   * A non-blocking TCP socket, connected or with its connect in progress (the handshake waits for it: a write to a
   * connecting socket says EAGAIN, epoll reports it writable once connected, and a refused connect fails the
   * handshake with tls_io). It is the transport's from this call on, whatever happens.
   */
  fd: number;
  role: TlsRole;
  /** The handshake (and a connect still in progress) must finish within this, or it fails with tls_timeout. */
  handshakeTimeoutMs: number;
  closeTimeoutMs?: number;
  /**
   * Hears the transport at once, before its handshake starts: an owner that must be able to drop a connection still
   * in its handshake (a worker stopping, a pod leaving the mesh) can destroy() it then; open() rejects with
   * tls_closed. Without this, such a connection would keep its fd until the handshake timeout, and forever on a
   * worker thread that has exited by then.
   */
  onStart?: (transport: TlsTransport) => void;
}

type State = "handshake" | "open" | "closed";

/**
 * An H2Session's transport over TLS on a Reactor (data path v2): OpenSSL over the socket fd (tls/connection.ts),
 * driven by the thread's epoll set, no Node stream. Built by TlsTransport.open(), which resolves once the handshake
 * is done (peer certificate verified against the trust bundle; `peer` says whose it is) and rejects with a TlsError
 * (tls_handshake, tls_io, tls_timeout) otherwise.
 *
 * Owner: the transport owns the fd and the SSL object from open() on, and is the only place either is released:
 * #release() removes the fd from the reactor's slot table, frees the SSL object, then closes the fd, exactly once,
 * whether the handshake failed, timed out, the peer failed, or the session destroyed it.
 *
 * Reads: level-triggered EPOLLIN while open; records are read until OpenSSL says WANT_READ (records it already
 * decrypted are invisible to epoll), gathered in the thread's shared buffer and handed to the session as a view.
 * Writes: the session's chunks are queued as given and handed to the connection's writeChunks, which seals as many
 * records as fit one write(2) (tls/connection.ts says how many, and why). Bytes leave the queue once OpenSSL took
 * them; ciphertext the socket did not take is the connection's (unsentBytes) and goes first once EPOLLOUT says the
 * socket has room. EPOLLOUT is armed only while something waits for the socket.
 *
 * Flushing: the session queues frames and writes them once per microtask checkpoint (sooner once 64 KiB wait), and
 * this transport does the same one level down: what it was given goes to the socket from a microtask of its own,
 * or at once in whole records once SEND_BYTES wait, so a sender's several 64 KiB batches of one turn leave together
 * (256 MiB of tls-h2-bench bulk: 4,270 write(2) when each batch was written as it came, 1,320 so). The Reactor runs
 * Node's tick and microtask queues after every batch of events it dispatches (reactor.ts, runTicks), so frames a
 * receive produced go out at the end of that batch: no flush hook is needed here.
 */
export class TlsTransport implements Transport, EventHandler {
  readonly lendsReads = true;
  readonly fd: number;
  readonly role: TlsRole;
  /** Times sending found the socket full and waited for EPOLLOUT (or OpenSSL wanted a read first). */
  writeWaits = 0;
  /** The peer ended its direction without close_notify (a truncated stream, reported to the session as an end). */
  endedUncleanly = false;
  readonly #reactor: Reactor;
  readonly #tls: TlsConnection;
  readonly #closeTimeoutMs: number;
  #state: State = "handshake";
  #token = -1;
  #mask = 0;
  #timer: NodeJS.Timeout | undefined;
  #sink: TransportSink | undefined;
  #resolve: ((t: TlsTransport) => void) | undefined;
  #reject: ((err: Error) => void) | undefined;
  #peer: PeerValidation | undefined;
  #alpn = "";
  /** Epoll went quiet on the fd before start() (an error or hang-up that would otherwise wake the loop forever). */
  #parked = false;
  #started = false;
  #out: Buffer[] = [];
  #outHead = 0;
  #outOffset = 0;
  #queued = 0;
  /** What the last write is waiting for: EPOLLOUT, EPOLLIN (a write that needs a read), or 0. */
  #writeWaitsFor = 0;
  /** A read returned WANT_WRITE: reading resumes on EPOLLOUT. */
  #readWaitsForWrite = false;
  #wantsDrain = false;
  #ending = false;
  #finSent = false;
  #readScheduled = false;
  #flushScheduled = false;

  private constructor(opts: TlsTransportOptions, resolve: (t: TlsTransport) => void, reject: (err: Error) => void) {
    this.fd = opts.fd;
    this.role = opts.role;
    this.#reactor = opts.reactor;
    this.#closeTimeoutMs = opts.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
    this.#resolve = resolve;
    this.#reject = reject;
    opts.onStart?.(this);
    let tls: TlsConnection;
    try {
      tls = new TlsConnection(opts.context, opts.fd, opts.role);
    } catch (err) {
      this.#state = "closed";
      closeSocket(opts.fd);
      reject(err as Error);
      // Never used: the transport is closed and open() rejected.
      this.#tls = undefined as unknown as TlsConnection;
      return;
    }
    this.#tls = tls;
    // HBONE carries request/response traffic: a small frame must leave at once, not wait for an ACK (Nagle).
    setIntOption(opts.fd, IPPROTO_TCP, TCP_NODELAY, 1);
    this.#timer = setTimeout(
      () =>
        this.#handshakeFailed(new TlsError("tls_timeout", `TLS handshake not done in ${opts.handshakeTimeoutMs} ms`)),
      opts.handshakeTimeoutMs,
    );
    try {
      this.#token = opts.reactor.add(opts.fd, 0, this);
    } catch (err) {
      this.#handshakeFailed(err as Error);
      return;
    }
    this.#handshakeStep();
  }

  /** Takes `opts.fd` and runs the TLS handshake on it; resolves with the transport once both ends verified. */
  static open(opts: TlsTransportOptions): Promise<TlsTransport> {
    return new Promise((resolve, reject) => {
      new TlsTransport(opts, resolve, reject);
    });
  }

  /**
   * The peer's SPIFFE identity, judged once when the handshake finished: its chain (DER from OpenSSL) through the
   * project's validation (agent/identity/validate.ts). HBONE compares it
   * with the identity expected at the address (hbone-peer.ts).
   */
  get peer(): PeerValidation {
    if (this.#peer === undefined) throw new TlsError("tls_closed", "peer identity asked for before the handshake");
    return this.#peer;
  }

  /** The ALPN protocol both ends agreed on ("" for none). */
  get alpn(): string {
    return this.#alpn;
  }

  get writable(): boolean {
    return this.#state === "open" && !this.#ending;
  }

  get destroyed(): boolean {
    return this.#state === "closed";
  }

  /** Plaintext accepted by write() and not yet encrypted, plus ciphertext the kernel has not taken yet. */
  get queuedBytes(): number {
    return this.#queued + (this.#state === "closed" ? 0 : this.#tls.unsentBytes);
  }

  start(sink: TransportSink): void {
    if (this.#started) throw new TlsError("tls_closed", "transport started twice");
    this.#started = true;
    this.#sink = sink;
    if (this.#state !== "open") {
      this.#notifyClosed();
      return;
    }
    // The session's owner attaches its listeners right after the constructor that called start: the first
    // receive waits until then. Bytes in the socket wake epoll (a hang-up seen before start too, once the fd is
    // back in the set); bytes OpenSSL read ahead during the handshake do not, so those get a read pass of their own.
    if (this.#parked) {
      this.#parked = false;
      try {
        this.#token = this.#reactor.add(this.fd, EPOLLIN, this);
      } catch (err) {
        this.#fail(err as Error);
        return;
      }
      this.#mask = EPOLLIN;
    }
    if (this.#tls.hasPending()) this.#scheduleRead();
    this.#sync();
  }

  write(chunks: Buffer[], bytes: number): boolean {
    if (!this.writable) return false;
    for (const c of chunks) this.#out.push(c);
    this.#queued += bytes;
    if (this.#writeWaitsFor === 0) {
      if (this.#queued >= SEND_BYTES) this.#flush(false, true);
      if (this.#queued > 0 && !this.#flushScheduled) {
        this.#flushScheduled = true;
        queueMicrotask(() => {
          this.#flushScheduled = false;
          if (this.#state === "open" && this.#writeWaitsFor === 0) this.#flush(true);
        });
      }
    }
    if (this.queuedBytes < TLS_HIGH_WATER) return true;
    this.#wantsDrain = true;
    return false;
  }

  /** Sends what is queued, then close_notify and FIN; reading goes on until the peer closes its side. */
  end(): void {
    if (!this.writable) return;
    this.#ending = true;
    if (this.#writeWaitsFor === 0) this.#flush(false);
  }

  /**
   * Releases the SSL object and the fd now (unsent bytes are dropped); the sink hears errored(err) if given, then
   * closed().
   */
  destroy(err?: Error): void {
    if (this.#state === "closed") return;
    if (this.#state === "handshake") {
      this.#handshakeFailed(err ?? new TlsError("tls_closed", "transport destroyed during the handshake"));
      return;
    }
    this.#release();
    if (err) this.#notifyError(err);
    this.#notifyClosed();
  }

  onEvents(events: number): void {
    if (this.#state === "handshake") {
      this.#handshakeStep();
      return;
    }
    if (this.#state !== "open") return;
    if (!this.#started) {
      // Not reading yet (the session is being built): an error or hang-up would be reported on every loop turn.
      this.#park();
      return;
    }
    if (events & EPOLLERR) {
      // What arrived before the error is read first: a peer that refuses us sends its alert, then closes with
      // our bytes unread, which is a RST here; the alert says why, the ECONNRESET does not.
      this.#readPass();
      if (this.#state !== "open") return;
      const errno = socketError(this.fd);
      const e = errno < 0 ? -errno : errno;
      this.#fail(new TlsError("tls_io", `TLS connection failed: ${errnoName(e)}`, [], e));
      return;
    }
    if (this.#writeWaitsFor !== 0 && events & this.#writeWaitsFor) {
      this.#flush(true);
      if (this.#state !== "open") return;
    }
    if (events & (EPOLLIN | EPOLLHUP) || (this.#readWaitsForWrite && events & EPOLLOUT)) this.#readPass();
  }

  #handshakeStep(): void {
    let step: string;
    try {
      step = this.#tls.handshake();
    } catch (err) {
      this.#handshakeFailed(err as Error);
      return;
    }
    if (step === "want_read") this.#setMask(EPOLLIN);
    else if (step === "want_write") this.#setMask(EPOLLOUT);
    else this.#handshakeDone();
  }

  #handshakeDone(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    try {
      this.#peer = this.#tls.peerIdentity();
      this.#alpn = this.#tls.alpn();
    } catch (err) {
      this.#handshakeFailed(err as Error);
      return;
    }
    this.#state = "open";
    this.#setMask(0);
    const resolve = this.#resolve;
    this.#resolve = undefined;
    this.#reject = undefined;
    resolve?.(this);
  }

  #handshakeFailed(err: Error): void {
    if (this.#state === "closed") return;
    this.#release();
    const reject = this.#reject;
    this.#resolve = undefined;
    this.#reject = undefined;
    reject?.(err);
  }

  #scheduleRead(): void {
    if (this.#readScheduled) return;
    this.#readScheduled = true;
    setImmediate(() => {
      this.#readScheduled = false;
      if (this.#state === "open") this.#readPass();
    });
  }

  #readPass(): void {
    if (readBufferBusy) {
      this.#scheduleRead();
      return;
    }
    readBufferBusy = true;
    try {
      this.#read();
    } catch (err) {
      this.#fail(err as Error);
    } finally {
      readBufferBusy = false;
    }
    // An answer OpenSSL wrote while reading (a KeyUpdate) that the socket did not take goes out on EPOLLOUT.
    if (this.#state === "open" && this.#writeWaitsFor === 0 && this.#tls.unsentBytes > 0) this.#waitFor(EPOLLOUT);
    // A read that waited for EPOLLOUT and no longer does must not leave it armed: a writable socket would wake
    // the loop on every turn.
    this.#sync();
  }

  /** Reads records until WANT_READ (or an end, or the per-event bound), handing them on a buffer's worth at a time. */
  #read(): void {
    const tls = this.#tls;
    const sink = this.#sink as TransportSink;
    this.#readWaitsForWrite = false;
    let budget = READ_BYTES_PER_EVENT;
    let filled = 0;
    for (;;) {
      const n = tls.read(filled === 0 ? readBuffer : readBuffer.subarray(filled), READ_BUFFER_BYTES - filled);
      if (n > 0) {
        filled += n;
        // A short record with nothing read ahead: the sender paused (request/response traffic), so the socket is
        // most likely empty; stop here rather than pay a read(2) that says EAGAIN (level-triggered epoll brings us
        // back if not). A full record means a bulk sender: read on.
        const more = tls.hasPending() || n === RECORD_BYTES;
        if (filled < READ_BUFFER_BYTES && more) continue;
        sink.receive(filled === READ_BUFFER_BYTES ? readBuffer : readBuffer.subarray(0, filled));
        if (this.#state !== "open") return;
        budget -= filled;
        filled = 0;
        if (!more) return;
        if (budget <= 0) {
          // Records OpenSSL holds would not wake epoll: come back for them after the others had their turn.
          if (tls.hasPending()) this.#scheduleRead();
          return;
        }
        continue;
      }
      if (filled > 0) {
        sink.receive(readBuffer.subarray(0, filled));
        if (this.#state !== "open") return;
        filled = 0;
      }
      if (n === TLS_WANT_READ) return;
      if (n === TLS_WANT_WRITE) {
        this.#readWaitsForWrite = true;
        this.#sync();
        return;
      }
      if (n === TLS_EOF || n === TLS_EOF_UNCLEAN) {
        this.endedUncleanly = n === TLS_EOF_UNCLEAN;
        // HBONE has no use for a half-open connection: the session closes on this.
        this.#release();
        sink.ended();
        this.#notifyClosed();
        return;
      }
    }
  }

  /**
   * Hands queued bytes to OpenSSL until the queue is empty or the socket is full; then close_notify and FIN once
   * end() asked for them. `fromEvent`: called by the loop, not from inside a session's write() (whose caller must
   * not be re-entered: its drained() is deferred to a microtask). `wholeRecords`: a tail shorter than a record stays
   * queued for the scheduled flush, which sends it with whatever the session adds in the same turn.
   */
  #flush(fromEvent: boolean, wholeRecords = false): void {
    const tls = this.#tls;
    try {
      for (;;) {
        if (tls.unsentBytes > 0 && tls.flush() === TLS_WANT_WRITE) {
          this.#waitFor(EPOLLOUT);
          return;
        }
        const bytes = wholeRecords ? this.#queued - (this.#queued % RECORD_BYTES) : this.#queued;
        if (bytes === 0) break;
        const n = tls.writeChunks(this.#out, this.#outHead, this.#outOffset, bytes);
        if (n < 0) {
          this.#waitFor(n === TLS_WANT_WRITE ? EPOLLOUT : EPOLLIN);
          return;
        }
        this.#consume(n);
        // The socket took less than it was offered: it is full, and a retry now would only say EAGAIN.
        if (tls.unsentBytes > 0) {
          this.#waitFor(EPOLLOUT);
          return;
        }
      }
      this.#writeWaitsFor = 0;
      if (this.#queued > 0) return;
      if (this.#ending && !this.#finSent && !this.#closeNotify()) return;
    } catch (err) {
      this.#fail(err as Error);
      return;
    }
    this.#sync();
    if (this.#wantsDrain) {
      this.#wantsDrain = false;
      if (fromEvent) this.#sink?.drained();
      else queueMicrotask(() => this.#state === "open" && this.#sink?.drained());
    }
  }

  /** close_notify, then FIN; false while OpenSSL waits for the socket to send it. */
  #closeNotify(): boolean {
    const step = this.#tls.shutdown();
    if (step !== "done") {
      this.#waitFor(step === "want_write" ? EPOLLOUT : EPOLLIN);
      return false;
    }
    this.#finSent = true;
    shutdown(this.fd, SHUT_WR);
    this.#timer = setTimeout(
      () => this.#fail(new TlsError("tls_timeout", `peer did not close within ${this.#closeTimeoutMs} ms of our end`)),
      this.#closeTimeoutMs,
    );
    return true;
  }

  /** A write waits for `events` (EPOLLOUT: the socket is full; EPOLLIN: OpenSSL needs a read first). */
  #waitFor(events: number): void {
    if (this.#writeWaitsFor === 0) this.writeWaits++;
    this.#writeWaitsFor = events;
    this.#sync();
  }

  /** Drops `n` bytes OpenSSL took from the head of the queue. */
  #consume(n: number): void {
    this.#queued -= n;
    let left = n;
    while (left > 0) {
      const head = this.#out[this.#outHead] as Buffer;
      const rest = head.length - this.#outOffset;
      if (left < rest) {
        this.#outOffset += left;
        return;
      }
      left -= rest;
      this.#out[this.#outHead] = EMPTY;
      this.#outHead++;
      this.#outOffset = 0;
    }
    if (this.#outHead === this.#out.length) {
      this.#out = [];
      this.#outHead = 0;
    } else if (this.#outHead > 1024) {
      this.#out = this.#out.slice(this.#outHead);
      this.#outHead = 0;
    }
  }

  /** What epoll should watch now: reads once started, writes only while something waits for the socket. */
  #sync(): void {
    if (this.#state !== "open" || this.#parked) return;
    let mask = this.#started ? EPOLLIN : 0;
    if (this.#writeWaitsFor === EPOLLOUT || this.#readWaitsForWrite) mask |= EPOLLOUT;
    this.#setMask(mask);
  }

  #setMask(mask: number): void {
    if (mask === this.#mask || this.#token < 0) return;
    this.#mask = mask;
    this.#reactor.modify(this.#token, mask);
  }

  #park(): void {
    if (this.#token >= 0) this.#reactor.remove(this.#token);
    this.#token = -1;
    this.#parked = true;
  }

  #fail(err: Error): void {
    if (this.#state === "closed") return;
    this.#release();
    this.#notifyError(err);
    this.#notifyClosed();
  }

  /** The one place the fd and the SSL object go: out of the reactor, SSL_free, close(2). */
  #release(): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    clearTimeout(this.#timer);
    this.#timer = undefined;
    // forget, not remove: closing our (only) descriptor of the socket takes it out of the epoll set.
    if (this.#token >= 0) this.#reactor.forget(this.#token);
    this.#token = -1;
    this.#tls.free();
    closeSocket(this.fd);
    this.#out = [];
    this.#outHead = 0;
    this.#outOffset = 0;
    this.#queued = 0;
  }

  /** Sink calls after a release run as a microtask: never inside the session call or receive that caused them. */
  #notifyError(err: Error): void {
    const sink = this.#sink;
    if (sink) queueMicrotask(() => sink.errored(err));
  }

  #notifyClosed(): void {
    const sink = this.#sink;
    if (sink) queueMicrotask(() => sink.closed());
  }
}

const EMPTY = Buffer.alloc(0);
