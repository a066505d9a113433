/**
 * One HTTP/2 stream of an H2Session. Not a Node stream: HBONE relays bytes between a TCP socket and a stream, and
 * the few callbacks below carry exactly what that needs (data, half-close, reset, back-pressure) at a fraction of
 * the cost of a Duplex. Data that arrives before `attach` is held (the stream window bounds it).
 *
 * Received bytes count against two windows, the stream's and the session's; both reopen only as the app takes the
 * data (`consumed`), so what a peer can make a session hold is bounded by the session's window, however many
 * streams it opens. Bytes a stream held when it closed are given back to the session then.
 */
import { ErrorCode } from "./constants.js";
import type { HeaderList } from "./hpack.js";

export interface StreamHandlers {
  /** Response headers (client side); `endStream` if the response has no body. */
  headers?(headers: HeaderList, endStream: boolean): void;
  /** Received bytes. With `H2Stream.lendsData`, `chunk` is valid only during this call: copy what is kept. */
  data(chunk: Buffer): void;
  /** The peer half-closed (END_STREAM). */
  end(): void;
  /** The peer reset the stream, or the connection under it failed. */
  reset(code: number): void;
  /** `write` returned false earlier and the stream can take more now. */
  drain(): void;
  /** Both directions are over (ended or reset); called once, last. */
  close(): void;
}

/** What a stream needs from its session; implemented by H2Session. */
export interface StreamOwner {
  /** Received DATA points into a buffer the transport reuses once the current receive returns. */
  readonly lendsData: boolean;
  sendHeaders(stream: H2Stream, headers: HeaderList, endStream: boolean): void;
  flushStream(stream: H2Stream): void;
  sendReset(stream: H2Stream, code: number): void;
  windowUpdate(stream: H2Stream, increment: number): void;
  /** Received bytes that no longer occupy the session's window (taken by the app, or dropped with the stream). */
  released(bytes: number): void;
  streamClosed(stream: H2Stream): void;
}

type Event =
  | { kind: "headers"; headers: HeaderList; endStream: boolean }
  | { kind: "data"; chunk: Buffer }
  | { kind: "end" }
  | { kind: "reset"; code: number };

export class H2Stream {
  /** Bytes we may still send (the peer's window for this stream). */
  sendWindow: number;
  /** Bytes the peer may still send us before we grant more. */
  recvWindow: number;
  /** Queued outgoing data not yet framed (no window, or the socket is full). */
  readonly outbox: Buffer[] = [];
  outboxBytes = 0;
  /** end() was called; END_STREAM goes out once the outbox is empty. */
  endQueued = false;
  localEnded = false;
  remoteEnded = false;
  closed = false;
  /** The caller is waiting for a drain() callback. */
  wantsDrain = false;
  /** Response headers have been sent (server) or received (client). */
  headersDone = false;
  /** Session side: since when (performance.now()) queued data has waited on a closed stream window, or -1. */
  stalledSince = -1;
  #handlers: StreamHandlers | undefined;
  #held: Event[] = [];
  #unacked = 0;
  /** Received (DATA payload and padding) and not yet consumed: what this stream holds of the session's window. */
  #owed = 0;

  constructor(
    readonly id: number,
    readonly owner: StreamOwner,
    sendWindow: number,
    /** Our SETTINGS_INITIAL_WINDOW_SIZE. */
    readonly windowSize: number,
  ) {
    this.sendWindow = sendWindow;
    this.recvWindow = windowSize;
  }

  /**
   * `data` callbacks get a view of the transport's read buffer, valid only during the call (a poll loop's shared
   * buffer): a handler that keeps a chunk (queues it for a socket, say) must copy it. False over Node sockets.
   */
  get lendsData(): boolean {
    return this.owner.lendsData;
  }

  /** Start receiving callbacks; anything that arrived before is replayed now, in order. */
  attach(handlers: StreamHandlers): void {
    this.#handlers = handlers;
    const held = this.#held;
    this.#held = [];
    for (const e of held) this.#deliver(e);
    if (this.closed) handlers.close();
  }

  /** Server side: answer the request. */
  respond(status: number, endStream = false): void {
    if (this.closed || this.headersDone) return;
    this.headersDone = true;
    this.owner.sendHeaders(this, [[":status", String(status)]], endStream);
    if (endStream) this.#localEnd();
  }

  /**
   * Queue data; false means stop writing until drain(). Data written after end() or a reset is dropped. `chunk` is
   * held, not copied, until the transport has written it: the caller must not reuse its memory.
   */
  write(chunk: Buffer): boolean {
    if (this.closed || this.endQueued) return true;
    if (chunk.length === 0) return true;
    this.outbox.push(chunk);
    this.outboxBytes += chunk.length;
    this.owner.flushStream(this);
    if (this.outboxBytes === 0 || this.closed) return true;
    this.wantsDrain = true;
    return false;
  }

  /** Half-close our direction once everything queued is sent. */
  end(): void {
    if (this.closed || this.endQueued) return;
    this.endQueued = true;
    this.owner.flushStream(this);
  }

  /** Abort both directions with RST_STREAM. */
  reset(code: number = ErrorCode.CANCEL): void {
    if (this.closed) return;
    this.owner.sendReset(this, code);
    this.#close();
  }

  /** The app took `n` received bytes: let the peer send that much more (batched into WINDOW_UPDATEs). */
  consumed(n: number): void {
    const release = Math.min(n, this.#owed);
    this.#owed -= release;
    if (release > 0) this.owner.released(release);
    if (this.closed || this.remoteEnded) return;
    this.#unacked += n;
    if (this.#unacked >= this.windowSize / 2) {
      this.recvWindow += this.#unacked;
      this.owner.windowUpdate(this, this.#unacked);
      this.#unacked = 0;
    }
  }

  /** Session side: the outbox emptied after a write() had returned false. */
  drained(): void {
    this.wantsDrain = false;
    this.#handlers?.drain();
  }

  /** Session side: END_STREAM went out. */
  localEndSent(): void {
    this.#localEnd();
  }

  receiveHeaders(headers: HeaderList, endStream: boolean): void {
    this.headersDone = true;
    this.#emit({ kind: "headers", headers, endStream });
    if (endStream) this.receiveEnd();
  }

  /** Session side: a DATA frame of `length` bytes (payload and padding) arrived; false if it overran the window. */
  receiveFrame(length: number): boolean {
    this.#owed += length;
    this.recvWindow -= length;
    return this.recvWindow >= 0;
  }

  receiveData(chunk: Buffer): void {
    if (this.#handlers) this.#handlers.data(chunk);
    // Held until attach, past the receive that brought it: a lent buffer is copied (at most a window's worth).
    else this.#held.push({ kind: "data", chunk: this.owner.lendsData ? Buffer.from(chunk) : chunk });
  }

  receiveEnd(): void {
    if (this.remoteEnded) return;
    this.remoteEnded = true;
    this.#emit({ kind: "end" });
    if (this.localEnded) this.#close();
  }

  /** The peer reset the stream, or the session is going away: nothing more is sent or received. */
  receiveReset(code: number): void {
    if (this.closed) return;
    this.#emit({ kind: "reset", code });
    this.#close();
  }

  #localEnd(): void {
    this.localEnded = true;
    this.outbox.length = 0;
    this.outboxBytes = 0;
    if (this.remoteEnded) this.#close();
  }

  #close(): void {
    if (this.closed) return;
    this.closed = true;
    this.localEnded = true;
    this.remoteEnded = true;
    this.outbox.length = 0;
    this.outboxBytes = 0;
    if (this.#owed > 0) this.owner.released(this.#owed);
    this.#owed = 0;
    this.owner.streamClosed(this);
    this.#handlers?.close();
  }

  #emit(e: Event): void {
    if (this.#handlers) this.#deliver(e);
    else this.#held.push(e);
  }

  #deliver(e: Event): void {
    const h = this.#handlers as StreamHandlers;
    if (e.kind === "data") h.data(e.chunk);
    else if (e.kind === "end") h.end();
    else if (e.kind === "reset") h.reset(e.code);
    else h.headers?.(e.headers, e.endStream);
  }
}
