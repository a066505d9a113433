import { constants } from "node:os";
import { SyscallError } from "../../native-bindings/errors.js";
import {
  EAGAIN,
  EINTR,
  EPOLLERR,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
  read,
  SHUT_WR,
  setLingerZero,
  shutdown,
  socketError,
  write,
} from "../../native-bindings/io.js";
import { ErrorCode, errorName } from "../h2/constants.js";
import { H2Error } from "../h2/errors.js";
import type { HeaderList } from "../h2/hpack.js";
import type { H2Stream, StreamHandlers } from "../h2/stream.js";
import type { RelayResult } from "../proxy/observer.js";
import { closeSocket } from "./fd.js";
import type { EventHandler, Reactor } from "./reactor.js";
import { COUNTER, type WorkerCounters } from "./shared-counters.js";

/**
 * Bytes taken per read(2). ONE buffer per thread (module state is per worker thread), shared by every relay of the
 * thread: what is read is copied once, exactly as long as it is, into the buffer the stream keeps until the bytes
 * are framed and sent; so an idle relay holds no read buffer of its own.
 */
const READ_BUFFER_BYTES = 64 * 1024;
const readBuffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);

/** Reads per readiness event at most (level-triggered epoll reports the rest), so one fast app cannot starve others. */
const READS_PER_EVENT = 8;

const ECONNRESET = constants.errno.ECONNRESET;

/**
 * Relay between a connected non-blocking TCP socket (`fd`, an app's connection) and an HTTP/2 stream (HBONE), both
 * ways, on `reactor`.
 *
 * - Back-pressure: reading the socket stops while the stream cannot take more (write() returned false) and resumes
 *   on its drain(). Received data is written to the socket at once; what the socket does not take waits in a queue
 *   (EPOLLOUT armed), and the peer's window reopens (stream.consumed) only for bytes the socket took, so the queue
 *   never holds more than the stream's window.
 * - Half-close: the socket's FIN becomes END_STREAM; the stream's END_STREAM becomes shutdown(SHUT_WR) once every
 *   queued byte is written. The socket is closed once both directions have ended.
 * - Reset: a socket error (EPOLLERR, a failed read or write) resets the stream (CANCEL) and closes the socket; a
 *   reset stream, whether the peer reset it, its session failed or the caller reset it (a refused CONNECT), closes
 *   the socket with a RST (SO_LINGER 0). result.error is the socket's error (SyscallError, code ECONNRESET ...) or
 *   the peer's reset (H2Error); a reset the caller made itself records none (the caller knows why).
 *
 * The relay owns `fd` from this call on and closes it exactly once; socket options (TCP_NODELAY) are the caller's.
 * In the result, aToB counts socket -> stream bytes. `onDone` runs once, after the socket is closed and the
 * stream's close() ran; if the stream is closed already, that is before this returns.
 */
export function relayFdStream(
  reactor: Reactor,
  counters: WorkerCounters,
  fd: number,
  stream: H2Stream,
  onDone: (result: RelayResult) => void,
  onHeaders?: (headers: HeaderList) => void,
  /**
   * Read the socket at once rather than on its first readiness event: for an app that has sent already (an
   * outbound connection's request arrives while its HBONE stream opens), its bytes leave with the stream's HEADERS
   * instead of one loop turn later.
   */
  readAtOnce = false,
): void {
  const relay = new FdStreamRelay(reactor, counters, fd, stream, onDone, onHeaders);
  relay.start();
  if (readAtOnce) relay.readNow();
}

class FdStreamRelay implements EventHandler, StreamHandlers {
  readonly #reactor: Reactor;
  readonly #counters: WorkerCounters;
  readonly #stream: H2Stream;
  readonly #onDone: (result: RelayResult) => void;
  readonly #onHeaders: ((headers: HeaderList) => void) | undefined;
  readonly #result: RelayResult = { aToB: 0, bToA: 0 };
  /** -1 once closed: the only place the fd is closed is #closeFd. */
  #fd: number;
  #token = -1;
  /** The mask epoll has for the fd now. */
  #mask = 0;
  /** Out of the epoll set after a hang-up while nothing was wanted from the fd (see #park). */
  #parked = false;
  /** EOF read from the socket (passed on as END_STREAM). */
  #eof = false;
  /** stream.write returned false: reading the socket waits for drain(). */
  #paused = false;
  /** Stream bytes the socket has not taken yet, oldest first, from #pendingHead (#pendingOffset into it). */
  #pending: Buffer[] | null = null;
  #pendingHead = 0;
  #pendingOffset = 0;
  /** The stream's END_STREAM arrived (passed on as shutdown(SHUT_WR) after the pending bytes). */
  #endReceived = false;
  #shutSent = false;
  #streamClosed = false;
  #done = false;

  constructor(
    reactor: Reactor,
    counters: WorkerCounters,
    fd: number,
    stream: H2Stream,
    onDone: (result: RelayResult) => void,
    onHeaders: ((headers: HeaderList) => void) | undefined,
  ) {
    this.#reactor = reactor;
    this.#counters = counters;
    this.#fd = fd;
    this.#stream = stream;
    this.#onDone = onDone;
    this.#onHeaders = onHeaders;
  }

  start(): void {
    try {
      this.#token = this.#reactor.add(this.#fd, EPOLLIN, this);
      this.#mask = EPOLLIN;
    } catch (err) {
      this.#result.error = err as Error;
      // The stream's close, replayed by attach below, closes the fd (with a RST) and ends the relay.
      this.#stream.reset(ErrorCode.CANCEL);
    }
    // Last: attach replays what the stream received so far, its close included.
    this.#stream.attach(this);
  }

  /** One read pass now, as if the socket had reported EPOLLIN. */
  readNow(): void {
    if (this.#fd >= 0 && this.#mask & EPOLLIN) this.#pump();
  }

  // EventHandler: the socket.

  onEvents(events: number): void {
    if (this.#fd < 0) return;
    if (events & EPOLLERR) {
      const err = socketError(this.#fd);
      this.#fail("socket", err === 0 ? ECONNRESET : Math.abs(err));
      return;
    }
    if (events & EPOLLOUT) {
      this.#flush();
      if (this.#fd < 0) return;
    }
    if (events & (EPOLLIN | EPOLLHUP)) {
      if (this.#mask & EPOLLIN) this.#pump();
      else if (!(this.#mask & EPOLLOUT)) this.#park();
    }
  }

  // StreamHandlers: the stream.

  headers(headers: HeaderList): void {
    this.#onHeaders?.(headers);
  }

  data(chunk: Buffer): void {
    // After the socket closed (it could not be watched), the stream is reset: what it delivered still is dropped.
    if (this.#fd < 0) return;
    const length = chunk.length;
    this.#result.bToA += length;
    if (this.#pending !== null) {
      this.#queue(chunk);
      return;
    }
    const w = write(this.#fd, chunk, length);
    if (w === length) {
      this.#accepted(length);
      return;
    }
    if (w < 0 && w !== -EAGAIN && w !== -EINTR) {
      this.#fail("write", -w);
      return;
    }
    const taken = Math.max(w, 0);
    if (taken > 0) this.#accepted(taken);
    this.#queue(taken === 0 ? chunk : chunk.subarray(taken));
    this.#sync();
  }

  end(): void {
    this.#endReceived = true;
    if (this.#fd >= 0 && this.#pending === null) this.#shutWrite();
  }

  reset(code: number): void {
    this.#result.error ??= new H2Error(code, `stream reset (${errorName(code)})`);
    this.#closeFd(true);
  }

  drain(): void {
    this.#paused = false;
    if (this.#fd >= 0) this.#sync();
  }

  close(): void {
    this.#streamClosed = true;
    // Closed without both ends having ended: a reset, by the peer (reset() ran) or by the caller (stream.reset()).
    if (!(this.#eof && this.#endReceived)) this.#closeFd(true);
    this.#finish();
  }

  /** Reads the socket and writes to the stream until EAGAIN, EOF, a full stream or the per-event bound. */
  #pump(): void {
    const stream = this.#stream;
    for (let i = 0; i < READS_PER_EVENT; i++) {
      const n = read(this.#fd, readBuffer, READ_BUFFER_BYTES);
      if (n > 0) {
        this.#result.aToB += n;
        this.#counters.add(COUNTER.stream_sent_bytes, n);
        // The stream keeps what it is given until it is sent: a copy of exactly what was read.
        const ok = stream.write(Buffer.from(readBuffer.subarray(0, n)));
        if (this.#fd < 0) return;
        if (!ok) {
          this.#paused = true;
          this.#sync();
          return;
        }
        // A short read: the socket is most likely empty now, and epoll says so if not.
        if (n < READ_BUFFER_BYTES) return;
        continue;
      }
      if (n === 0) {
        this.#eof = true;
        // May close the stream at once (the other direction had ended): then the fd is closed here too.
        stream.end();
        if (this.#fd < 0) return;
        if (this.#shutSent) this.#closeFd(false);
        else this.#sync();
        return;
      }
      if (n === -EAGAIN) return;
      if (n !== -EINTR) {
        this.#fail("read", -n);
        return;
      }
    }
  }

  /** Writes what is pending; once all is written, the stream's END_STREAM is passed on if it came. */
  #flush(): void {
    const pending = this.#pending;
    if (pending === null) return;
    while (this.#pendingHead < pending.length) {
      const head = pending[this.#pendingHead] as Buffer;
      const off = this.#pendingOffset;
      const rest = head.length - off;
      const w = write(this.#fd, off === 0 ? head : head.subarray(off), rest);
      if (w === rest) {
        this.#accepted(rest);
        this.#pendingHead++;
        this.#pendingOffset = 0;
      } else if (w >= 0) {
        if (w > 0) this.#accepted(w);
        this.#pendingOffset += w;
        return;
      } else if (w === -EAGAIN) {
        return;
      } else if (w !== -EINTR) {
        this.#fail("write", -w);
        return;
      }
      if (this.#fd < 0) return;
    }
    this.#pending = null;
    this.#pendingHead = 0;
    if (this.#endReceived) {
      this.#shutWrite();
      if (this.#fd < 0) return;
    }
    this.#sync();
  }

  /** Keeps stream bytes the socket did not take: a lent chunk (a view of a shared read buffer) is copied. */
  #queue(chunk: Buffer): void {
    const kept = this.#stream.lendsData ? Buffer.from(chunk) : chunk;
    if (this.#pending === null) this.#pending = [kept];
    else this.#pending.push(kept);
  }

  /** The socket took `n` stream bytes: only now may the peer send that much more. */
  #accepted(n: number): void {
    this.#counters.add(COUNTER.stream_received_bytes, n);
    this.#stream.consumed(n);
  }

  /** Passes END_STREAM on; the socket is closed once its EOF was read too. */
  #shutWrite(): void {
    if (this.#shutSent) return;
    this.#shutSent = true;
    shutdown(this.#fd, SHUT_WR);
    if (this.#eof) this.#closeFd(false);
    else this.#sync();
  }

  /** The socket failed: it is closed and the stream reset. */
  #fail(call: string, errno: number): void {
    this.#result.error ??= new SyscallError(call, errno);
    this.#closeFd(false);
    this.#stream.reset(ErrorCode.CANCEL);
  }

  /** Makes epoll watch what the socket is needed for now: reading unless ended or paused, writing while bytes wait. */
  #sync(): void {
    let mask = 0;
    if (!this.#eof && !this.#paused) mask |= EPOLLIN;
    if (this.#pending !== null) mask |= EPOLLOUT;
    if (this.#parked) {
      if (mask === 0) return;
      try {
        this.#token = this.#reactor.add(this.#fd, mask, this);
      } catch (err) {
        this.#result.error ??= err as Error;
        this.#closeFd(true);
        this.#stream.reset(ErrorCode.CANCEL);
        return;
      }
      this.#parked = false;
      this.#mask = mask;
      return;
    }
    if (mask === this.#mask) return;
    this.#mask = mask;
    this.#reactor.modify(this.#token, mask);
  }

  /**
   * A socket whose peer shut both directions (or reset it) reports EPOLLHUP whatever its mask. While the relay
   * neither reads it (the stream is full) nor writes to it, that would wake the loop on every turn: it leaves the
   * epoll set until it is wanted again (#sync adds it back).
   */
  #park(): void {
    this.#reactor.remove(this.#token);
    this.#token = -1;
    this.#parked = true;
  }

  #closeFd(reset: boolean): void {
    const fd = this.#fd;
    if (fd < 0) return;
    if (this.#token >= 0 && !this.#parked) this.#reactor.forget(this.#token);
    this.#token = -1;
    if (reset) setLingerZero(fd);
    closeSocket(fd);
    this.#fd = -1;
    this.#pending = null;
    this.#finish();
  }

  #finish(): void {
    if (this.#done || this.#fd >= 0 || !this.#streamClosed) return;
    this.#done = true;
    this.#onDone(this.#result);
  }
}
