/**
 * An HTTP/2 connection (RFC 9113) over an already-secured byte transport, carrying HBONE's CONNECT streams. Written
 * for the proxy's hot path: frames go straight to the transport (batched per turn of the event loop), DATA is
 * forwarded slice by slice, and a stream costs a map entry and a HEADERS frame each way. The transport is a Node
 * socket (SocketTransport) or anything else that moves bytes (transport.ts): the session never touches a socket.
 *
 * Scope: everything a conforming peer may send is understood (HPACK in full, padding, CONTINUATION, PRIORITY,
 * PING, GOAWAY, flow control); what HBONE never uses is refused cleanly (server push, streams opened by a server).
 * Connection errors send GOAWAY and close; stream errors send RST_STREAM.
 */
import { EventEmitter } from "node:events";
import { Duplex } from "node:stream";
import {
  DEFAULT_MAX_FRAME_SIZE,
  DEFAULT_WINDOW,
  ErrorCode,
  Flag,
  FrameType,
  MAX_FRAME_SIZE_LIMIT,
  MAX_WINDOW,
  PREFACE,
  Setting,
} from "./constants.js";
import { H2Error, protocolError } from "./errors.js";
import { FrameReader, type FrameSink } from "./frame-reader.js";
import { encodeHeaders, type HeaderLimits, type HeaderList, HpackDecoder } from "./hpack.js";
import { DEFAULT_LOCAL_SETTINGS, encodeSettings, type LocalSettings } from "./settings.js";
import { SocketTransport } from "./socket-transport.js";
import { H2Stream, type StreamOwner } from "./stream.js";
import type { Transport, TransportSink } from "./transport.js";
import { checkHeaders } from "./validate-headers.js";

export interface SessionOptions {
  role: "client" | "server";
  settings?: Partial<LocalSettings>;
  /** Time the peer gets to send its preface and first SETTINGS before the connection is dropped. */
  settingsTimeoutMs?: number;
  /** Server side: how many streams the peer may reset before they are answered; see EARLY_RESETS. */
  earlyResets?: RateLimit;
  /** Frames that cost us work or a reply and move no stream forward; see FRAME_BUDGET. */
  frameBudget?: RateLimit;
  /** A header block split over CONTINUATION frames must be complete within this; see HEADER_BLOCK_TIMEOUT_MS. */
  headerBlockTimeoutMs?: number;
  /** Data that waits this long on a window the peer keeps closed ends its stream or session; see STALL_TIMEOUT_MS. */
  stallTimeoutMs?: number;
  /** Client side: the first stream id (odd, default 1); tests start near 2^31 to reach the end of the id space. */
  firstStreamId?: number;
}

/** A token bucket: so many events at once, so many per second sustained. */
export interface RateLimit {
  burst: number;
  perSecond: number;
}

/** A session's bucket for one RateLimit; it keeps counting below zero, so a flood stays over its limit. */
class TokenBucket {
  readonly limit: RateLimit;
  #tokens: number;
  #refilledAt = performance.now();

  constructor(limit: RateLimit) {
    this.limit = limit;
    this.#tokens = limit.burst;
  }

  /** Spends a token; false once the bucket is below empty. */
  take(): boolean {
    const now = performance.now();
    const { burst, perSecond } = this.limit;
    this.#tokens = Math.min(burst, this.#tokens + ((now - this.#refilledAt) / 1000) * perSecond);
    this.#refilledAt = now;
    return --this.#tokens >= 0;
  }
}

/**
 * Rapid reset (CVE-2023-44487): a peer that opens streams and resets them at once never has more than a few open,
 * so the concurrency limit does not stop it, while each such stream costs us a connection to the app. A reset before
 * the answer is rare in honest traffic (the app connection died within a connect's time), so past this rate the
 * session sends GOAWAY with ENHANCE_YOUR_CALM: it takes no new stream, lets the ones it carries finish (an honest
 * peer's other connections are not cut), then closes; the error is reported with its "close". nghttp2, which HBONE
 * used before, limits all resets to a burst of 1000 and 33 per second; ambit counts only the unanswered ones and
 * allows more of them.
 */
const EARLY_RESETS: RateLimit = { burst: 1000, perSecond: 100 };

/**
 * The 2019 flood family (CVE-2019-9512 ping, -9515 settings, -9518 empty frames, and their kin): frames that each
 * cost a reply (PING, SETTINGS, a refused HEADERS) or work (an empty DATA frame without END_STREAM, PRIORITY, a
 * WINDOW_UPDATE of under SMALL_WINDOW_UPDATE or for a stream that is gone, a RST_STREAM for one, GOAWAY, an unknown
 * frame type) and move no stream forward. Past the budget the session sends GOAWAY with ENHANCE_YOUR_CALM and
 * closes. An honest peer sends two SETTINGS per connection, keepalive PINGs seconds apart, and at most ~10 PINGs
 * a second for window tuning (hyper's BDP pings back off from 100 ms); ambit's own client sends none of the rest.
 * The budget is ten times that, sustained, and a burst of 1000 for a connection's start: a PING flood, however
 * long, is answered 1000 times (17 KiB of replies) and then closed, where every PING used to be answered.
 */
const FRAME_BUDGET: RateLimit = { burst: 1000, perSecond: 100 };

/**
 * A WINDOW_UPDATE smaller than this counts against FRAME_BUDGET: it buys a peer tiny DATA frames (the "data
 * dribble" of CVE-2019-9511). Go batches its updates to at least 4 KiB, nghttp2, the h2 crate and ambit to half a
 * window; none sends less than this.
 */
const SMALL_WINDOW_UPDATE = 1024;

/** Entries one SETTINGS frame may carry (nghttp2's limit too): each may cost a pass over every stream. */
const MAX_SETTINGS_ENTRIES = 32;

/**
 * Header fields one block may carry. HBONE's CONNECT has fewer than ten (:method, :authority, baggage, forwarded,
 * traceparent ...); Envoy's default cap is 100 as well. The 16 KiB list size alone would let 512 through.
 */
const MAX_HEADER_FIELDS = 100;

/**
 * CONTINUATION frames one header block may take (the 2024 "CONTINUATION flood": endless frames without
 * END_HEADERS, zero-length ones included, which no byte count notices). A block is at most 16 KiB and a frame may
 * carry 16 KiB, so an honest peer needs one; nghttp2 allows 8, this twice that.
 */
const MAX_CONTINUATIONS = 16;

/**
 * Time a header block split over frames may take. While it lasts no other frame may come on the connection, so a
 * peer that stops halfway holds the connection and the block's bytes; an honest peer writes a block at once.
 */
const HEADER_BLOCK_TIMEOUT_MS = 10_000;

/**
 * Time data may wait on a window the peer keeps at zero (a slow-read attack, or a peer app that stopped reading):
 * the stream is then reset (CANCEL), or the session closed (ENHANCE_YOUR_CALM) when the connection window is the
 * closed one. Meanwhile the app socket is not read (stream.write returned false), so what waits is a read's worth
 * per stream. Twice the peer timeout of ambit's HBONE sockets (30 s), so a live but slow peer is not cut short.
 */
const STALL_TIMEOUT_MS = 60_000;

/** The answer to a request whose header list is over the limits (RFC 9113 section 10.5.1, RFC 6585). */
const TOO_LARGE = encodeHeaders([[":status", "431"]]);

const STATUS = /^[1-5][0-9][0-9]$/;

/** Frames queued in one turn are written together once they reach this size. */
const BATCH_BYTES = 64 * 1024;

interface HeaderBlock {
  streamId: number;
  endStream: boolean;
  chunks: Buffer[];
  size: number;
  /** HEADERS and CONTINUATION frames so far. */
  frames: number;
}

/**
 * Events: "stream" (server: a new request, with its stream and headers), "goaway" (the peer will take no new
 * streams), "idle" (the last open stream closed), "close" (the connection is gone; Error if it ended by one).
 */
export class H2Session extends EventEmitter implements StreamOwner, FrameSink, TransportSink {
  readonly role: "client" | "server";
  readonly settings: LocalSettings;
  /** DATA handed to streams' data handlers is valid only during the call (see Transport.lendsReads). */
  readonly lendsData: boolean;
  readonly #transport: Transport;
  readonly #streams = new Map<number, H2Stream>();
  readonly #reader: FrameReader;
  readonly #hpack: HpackDecoder;
  /** Streams holding data that waits for window or transport space. */
  readonly #waiting = new Set<H2Stream>();
  #nextStreamId: number;
  /** Highest stream id the peer opened; stays 0 on a client (servers open no streams: push is off). */
  #lastStreamId = 0;
  #peerWindow = DEFAULT_WINDOW;
  #peerMaxFrame = DEFAULT_MAX_FRAME_SIZE;
  #peerMaxStreams = Number.POSITIVE_INFINITY;
  #connRecvWindow: number;
  #connUnacked = 0;
  #connSendWindow = DEFAULT_WINDOW;
  #prefaceLeft: number;
  #settingsSeen = false;
  #settingsTimer: NodeJS.Timeout | undefined;
  #block: HeaderBlock | undefined;
  #blockTimer: NodeJS.Timeout | undefined;
  readonly #blockTimeoutMs: number;
  readonly #headerLimits: HeaderLimits;
  #out: Buffer[] = [];
  #outBytes = 0;
  #flushQueued = false;
  #blocked = false;
  #goawaySent = false;
  /** closeSoon() ran: the peer was told to open no new stream (the final GOAWAY is #goawaySent's). */
  #goawayNoticeSent = false;
  #goawayReceived = false;
  #destroyed = false;
  #error: Error | undefined;
  readonly #earlyResets: TokenBucket;
  readonly #frameBudget: TokenBucket;
  readonly #stallTimeoutMs: number;
  #stallTimer: NodeJS.Timeout | undefined;
  /** When data began waiting on a closed connection window (performance.now()), or -1. */
  #connStalledSince = -1;

  /** A bare Duplex is wrapped in a SocketTransport. */
  constructor(transport: Transport | Duplex, opts: SessionOptions) {
    super();
    this.role = opts.role;
    this.settings = { ...DEFAULT_LOCAL_SETTINGS, ...opts.settings };
    this.#transport = transport instanceof Duplex ? new SocketTransport(transport) : transport;
    this.lendsData = this.#transport.lendsReads;
    const first = opts.firstStreamId ?? 1;
    if (first < 1 || first % 2 !== 1 || first > MAX_WINDOW) throw new RangeError(`bad first stream id ${first}`);
    this.#nextStreamId = opts.role === "client" ? first : 2;
    this.#prefaceLeft = opts.role === "server" ? PREFACE.length : 0;
    this.#reader = new FrameReader(this, this.settings.maxFrameSize);
    this.#hpack = new HpackDecoder();
    this.#connRecvWindow = DEFAULT_WINDOW;
    this.#earlyResets = new TokenBucket(opts.earlyResets ?? EARLY_RESETS);
    this.#frameBudget = new TokenBucket(opts.frameBudget ?? FRAME_BUDGET);
    this.#blockTimeoutMs = opts.headerBlockTimeoutMs ?? HEADER_BLOCK_TIMEOUT_MS;
    this.#stallTimeoutMs = opts.stallTimeoutMs ?? STALL_TIMEOUT_MS;
    this.#headerLimits = { maxListSize: this.settings.maxHeaderListSize, maxFields: MAX_HEADER_FIELDS };

    if (opts.role === "client") this.#queue(PREFACE);
    this.#frame(FrameType.SETTINGS, 0, 0, encodeSettings(this.settings));
    const raise = this.settings.connectionWindow - DEFAULT_WINDOW;
    if (raise > 0) {
      this.#connRecvWindow += raise;
      this.#frame(FrameType.WINDOW_UPDATE, 0, 0, u32(raise));
    }
    if (opts.settingsTimeoutMs) {
      this.#settingsTimer = setTimeout(
        () => this.#fail(new H2Error(ErrorCode.SETTINGS_TIMEOUT, "peer sent no preface and SETTINGS in time")),
        opts.settingsTimeoutMs,
      );
    }
    this.#transport.start(this);
  }

  get destroyed(): boolean {
    return this.#destroyed;
  }

  get streamCount(): number {
    return this.#streams.size;
  }

  /**
   * Client side: a new stream may be opened on this connection now. False for good once the stream ids are used up
   * (the session then drains and closes by itself): a pool makes a new session.
   */
  get canRequest(): boolean {
    return (
      !this.#destroyed &&
      !this.#goawaySent &&
      !this.#goawayReceived &&
      this.#streams.size < this.#peerMaxStreams &&
      this.#nextStreamId <= MAX_WINDOW
    );
  }

  /** Client side: open a stream with these request headers (check canRequest first). */
  request(headers: HeaderList): H2Stream {
    if (this.role !== "client") throw new Error("only a client session opens streams");
    if (!this.canRequest) {
      const why = this.#nextStreamId > MAX_WINDOW ? "its stream ids are used up" : "it is full or closing";
      throw new H2Error(ErrorCode.REFUSED_STREAM, `session cannot take a new stream: ${why}`);
    }
    const id = this.#nextStreamId;
    this.#nextStreamId += 2;
    const stream = new H2Stream(id, this, this.#peerWindow, this.settings.streamWindow);
    this.#streams.set(id, stream);
    this.sendHeaders(stream, headers, false);
    // The last id went out: no stream can follow, so the session says so (GOAWAY) and ends with its last stream.
    if (this.#nextStreamId > MAX_WINDOW) this.close();
    return stream;
  }

  /** Graceful close: GOAWAY, no new streams; the connection ends when the last stream does. */
  close(): void {
    if (this.#destroyed) return;
    this.#goaway(ErrorCode.NO_ERROR);
    if (this.#streams.size === 0) this.#end();
  }

  /**
   * Server side, first half of a graceful shutdown (RFC 9113 section 6.8): GOAWAY with the highest stream id and
   * NO_ERROR. The client opens no new stream here and goes to a new connection, while the streams it may have sent
   * already are still served; close() later sends the real last id. Going straight to close() would refuse a stream
   * that crossed the GOAWAY on the wire, and a refused CONNECT resets an app connection that never reached the app.
   */
  closeSoon(): void {
    if (this.#destroyed || this.#goawaySent || this.#goawayNoticeSent || this.role !== "server") return;
    this.#goawayNoticeSent = true;
    this.#goawayFrame(MAX_WINDOW, ErrorCode.NO_ERROR);
  }

  /** Abrupt close: every stream is reset and the transport destroyed. */
  destroy(err?: Error): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#error ??= err;
    clearTimeout(this.#settingsTimer);
    clearTimeout(this.#blockTimer);
    clearTimeout(this.#stallTimer);
    this.#reader.stop();
    this.#flush();
    const code = err instanceof H2Error ? err.h2code : ErrorCode.CANCEL;
    for (const stream of [...this.#streams.values()]) stream.receiveReset(code);
    this.#transport.destroy();
    this.emit("close", this.#error);
  }

  // TransportSink: what the transport hands us.

  receive(buf: Buffer): void {
    if (this.#destroyed) return;
    try {
      let rest = buf;
      if (this.#prefaceLeft > 0) {
        const n = Math.min(this.#prefaceLeft, rest.length);
        const offset = PREFACE.length - this.#prefaceLeft;
        if (!rest.subarray(0, n).equals(PREFACE.subarray(offset, offset + n))) {
          throw protocolError("not an HTTP/2 connection preface");
        }
        this.#prefaceLeft -= n;
        rest = rest.subarray(n);
        if (rest.length === 0) return;
      }
      this.#reader.push(rest);
    } catch (err) {
      this.#fail(err instanceof H2Error ? err : new H2Error(ErrorCode.INTERNAL_ERROR, String(err), { cause: err }));
    }
  }

  drained(): void {
    this.#blocked = false;
    this.#resumeWaiting();
  }

  ended(): void {
    this.destroy();
  }

  errored(err: Error): void {
    this.destroy(err);
  }

  closed(): void {
    this.destroy();
  }

  // StreamOwner: what streams ask of their session.

  sendHeaders(stream: H2Stream, headers: HeaderList, endStream: boolean): void {
    const block = encodeHeaders(headers);
    const max = this.#peerMaxFrame;
    let first = true;
    for (let pos = 0; first || pos < block.length; pos += max) {
      const last = pos + max >= block.length;
      const flags = (last ? Flag.END_HEADERS : 0) | (first && endStream ? Flag.END_STREAM : 0);
      this.#frame(first ? FrameType.HEADERS : FrameType.CONTINUATION, flags, stream.id, block.subarray(pos, pos + max));
      first = false;
    }
  }

  flushStream(stream: H2Stream): void {
    while (stream.outboxBytes > 0) {
      const allowed = Math.min(stream.sendWindow, this.#connSendWindow, this.#peerMaxFrame);
      if (allowed <= 0 || this.#blocked) {
        if (!this.#blocked) this.#stalled(stream);
        this.#waiting.add(stream);
        return;
      }
      stream.stalledSince = -1;
      const head = stream.outbox[0] as Buffer;
      const n = Math.min(allowed, head.length);
      const piece = n === head.length ? head : head.subarray(0, n);
      if (n === head.length) stream.outbox.shift();
      else stream.outbox[0] = head.subarray(n);
      stream.outboxBytes -= n;
      stream.sendWindow -= n;
      this.#connSendWindow -= n;
      const last = stream.outboxBytes === 0 && stream.endQueued;
      this.#frame(FrameType.DATA, last ? Flag.END_STREAM : 0, stream.id, piece);
      if (last) {
        this.#waiting.delete(stream);
        stream.localEndSent();
        return;
      }
    }
    this.#waiting.delete(stream);
    if (stream.endQueued && !stream.localEnded) {
      this.#frame(FrameType.DATA, Flag.END_STREAM, stream.id);
      stream.localEndSent();
    } else if (stream.wantsDrain) stream.drained();
  }

  sendReset(stream: H2Stream, code: number): void {
    this.#frame(FrameType.RST_STREAM, 0, stream.id, u32(code));
  }

  windowUpdate(stream: H2Stream, increment: number): void {
    this.#frame(FrameType.WINDOW_UPDATE, 0, stream.id, u32(increment));
  }

  released(bytes: number): void {
    this.#connUnacked += bytes;
    if (this.#connUnacked >= this.settings.connectionWindow / 2) {
      this.#connRecvWindow += this.#connUnacked;
      this.#frame(FrameType.WINDOW_UPDATE, 0, 0, u32(this.#connUnacked));
      this.#connUnacked = 0;
    }
  }

  streamClosed(stream: H2Stream): void {
    this.#streams.delete(stream.id);
    this.#waiting.delete(stream);
    if (this.#streams.size > 0) return;
    // After a GOAWAY either way no new stream can come: the connection's work is done.
    if (this.#goawaySent || this.#goawayReceived) this.#end();
    else this.emit("idle");
  }

  // FrameSink: what the frame reader hands us.

  dataStart(streamId: number, flags: number, length: number): void {
    if (this.#block) throw protocolError("DATA inside a header block");
    if (streamId === 0) throw protocolError("DATA on stream 0");
    if (length === 0 && !(flags & Flag.END_STREAM)) this.#charge("empty DATA frames");
    this.#connRecvWindow -= length;
    if (this.#connRecvWindow < 0) throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, "peer overran the connection window");
    const stream = this.#streams.get(streamId);
    if (!stream) {
      this.#checkKnown(streamId, "DATA");
      this.released(length);
      return;
    }
    if (stream.remoteEnded) {
      this.released(length);
      this.#streamError(stream, ErrorCode.STREAM_CLOSED);
      return;
    }
    if (!stream.receiveFrame(length)) this.#streamError(stream, ErrorCode.FLOW_CONTROL_ERROR);
  }

  data(streamId: number, chunk: Buffer): void {
    const stream = this.#streams.get(streamId);
    if (stream && !stream.remoteEnded) stream.receiveData(chunk);
  }

  dataEnd(streamId: number, flags: number, padding: number): void {
    const stream = this.#streams.get(streamId);
    if (!stream || stream.remoteEnded) return;
    if (padding > 0) stream.consumed(padding);
    if (flags & Flag.END_STREAM) stream.receiveEnd();
  }

  frame(type: number, flags: number, streamId: number, payload: Buffer): void {
    if (this.#block && type !== FrameType.CONTINUATION) throw protocolError("frame inside a header block");
    if (!this.#settingsSeen && type !== FrameType.SETTINGS) throw protocolError("first frame is not SETTINGS");
    switch (type) {
      case FrameType.HEADERS:
        this.#onHeaders(flags, streamId, payload);
        return;
      case FrameType.CONTINUATION:
        this.#onContinuation(flags, streamId, payload);
        return;
      case FrameType.SETTINGS:
        this.#onSettings(flags, streamId, payload);
        return;
      case FrameType.WINDOW_UPDATE:
        this.#onWindowUpdate(streamId, payload);
        return;
      case FrameType.RST_STREAM:
        this.#onReset(streamId, payload);
        return;
      case FrameType.PING:
        if (streamId !== 0) throw protocolError("PING on a stream");
        if (payload.length !== 8) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "PING must carry 8 bytes");
        this.#charge("PING frames");
        if (!(flags & Flag.ACK)) this.#frame(FrameType.PING, Flag.ACK, 0, Buffer.from(payload));
        return;
      case FrameType.GOAWAY:
        this.#charge("GOAWAY frames");
        this.#onGoaway(streamId, payload);
        return;
      case FrameType.PRIORITY:
        if (streamId === 0) throw protocolError("PRIORITY on stream 0");
        this.#charge("PRIORITY frames");
        return;
      case FrameType.PUSH_PROMISE:
        throw protocolError("PUSH_PROMISE while push is disabled");
      default:
        // Unknown frame types are ignored (RFC 9113 section 4.1), but not for free.
        this.#charge("frames of unknown types");
    }
  }

  #onHeaders(flags: number, streamId: number, payload: Buffer): void {
    if (streamId === 0) throw protocolError("HEADERS on stream 0");
    let start = 0;
    let end = payload.length;
    if (flags & Flag.PADDED) {
      const pad = payload[0] ?? 0;
      start = 1;
      end -= pad;
    }
    if (flags & Flag.PRIORITY) start += 5;
    if (start > end) throw protocolError("HEADERS padding or priority longer than the frame");
    this.#block = { streamId, endStream: (flags & Flag.END_STREAM) !== 0, chunks: [], size: 0, frames: 0 };
    if (!(flags & Flag.END_HEADERS)) {
      this.#blockTimer = setTimeout(
        () =>
          this.#fail(
            new H2Error(ErrorCode.ENHANCE_YOUR_CALM, `header block not finished within ${this.#blockTimeoutMs} ms`),
          ),
        this.#blockTimeoutMs,
      );
    }
    this.#addBlockFragment(flags, payload.subarray(start, end));
  }

  #onContinuation(flags: number, streamId: number, payload: Buffer): void {
    if (!this.#block || this.#block.streamId !== streamId) throw protocolError("CONTINUATION without HEADERS");
    this.#addBlockFragment(flags, payload);
  }

  #addBlockFragment(flags: number, fragment: Buffer): void {
    const block = this.#block as HeaderBlock;
    const more = !(flags & Flag.END_HEADERS);
    if (++block.frames > 1 + MAX_CONTINUATIONS) {
      throw new H2Error(ErrorCode.ENHANCE_YOUR_CALM, `header block in more than ${1 + MAX_CONTINUATIONS} frames`);
    }
    // A fragment waiting for its CONTINUATION outlives this receive: copied, as the transport may reuse its buffer
    // (and a slice would pin a whole socket read). Blocks in one frame, nearly all of them, are decoded in place.
    if (fragment.length > 0 || !more) block.chunks.push(more ? Buffer.from(fragment) : fragment);
    block.size += fragment.length;
    // The encoded block is kept whole until it ends (the decoder works on whole blocks): past this bound it cannot
    // be decoded, the HPACK state is lost, and so is the connection.
    if (block.size > this.settings.maxHeaderListSize) {
      throw new H2Error(ErrorCode.ENHANCE_YOUR_CALM, `header block over ${this.settings.maxHeaderListSize} bytes`);
    }
    if (more) return;
    this.#block = undefined;
    clearTimeout(this.#blockTimer);
    this.#blockTimer = undefined;
    // Decoded even for streams about to be refused, and past the limits: the HPACK table must stay in step with
    // the peer's. undefined: the decoded list is over the limits (its fields were dropped as they came).
    const headers = this.#hpack.decode(
      block.chunks.length === 1 ? (block.chunks[0] as Buffer) : Buffer.concat(block.chunks),
      this.#headerLimits,
    );
    if (this.role === "server") this.#onRequest(block.streamId, headers, block.endStream);
    else this.#onResponse(block.streamId, headers, block.endStream);
  }

  #onRequest(id: number, headers: HeaderList | undefined, endStream: boolean): void {
    const existing = this.#streams.get(id);
    if (existing) {
      // Trailers: only allowed to end the request (their fields are not used, so their size does not matter).
      if (!endStream || existing.remoteEnded) {
        this.#streamError(existing, ErrorCode.PROTOCOL_ERROR);
        return;
      }
      existing.receiveEnd();
      return;
    }
    if (id % 2 === 0 || id <= this.#lastStreamId) throw protocolError(`stream ${id} cannot be opened by the client`);
    this.#lastStreamId = id;
    if (this.#goawaySent || this.#streams.size >= this.settings.maxConcurrentStreams) {
      this.#charge("refused streams");
      this.#frame(FrameType.RST_STREAM, 0, id, u32(ErrorCode.REFUSED_STREAM));
      return;
    }
    if (!headers) {
      // 431, not REFUSED_STREAM (which invites a retry of the same request): a complete response, then RST_STREAM
      // NO_ERROR so the peer sends nothing more on the stream (RFC 9113 section 8.1). No stream is kept for it.
      this.#charge("oversized header lists");
      this.#frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, id, TOO_LARGE);
      this.#frame(FrameType.RST_STREAM, 0, id, u32(ErrorCode.NO_ERROR));
      return;
    }
    const malformed = checkHeaders(headers, "request");
    if (malformed) {
      this.#charge("malformed requests");
      this.#frame(FrameType.RST_STREAM, 0, id, u32(ErrorCode.PROTOCOL_ERROR));
      return;
    }
    const stream = new H2Stream(id, this, this.#peerWindow, this.settings.streamWindow);
    this.#streams.set(id, stream);
    if (endStream) stream.receiveEnd();
    this.emit("stream", stream, headers);
  }

  #onResponse(id: number, headers: HeaderList | undefined, endStream: boolean): void {
    const stream = this.#streams.get(id);
    if (!stream) {
      this.#checkKnown(id, "HEADERS");
      return;
    }
    if (stream.headersDone) {
      if (!endStream) {
        this.#streamError(stream, ErrorCode.PROTOCOL_ERROR);
        return;
      }
      stream.receiveEnd();
      return;
    }
    // A response over our limits is discarded (RFC 9113 section 10.5.1): the stream is cancelled.
    if (!headers) {
      this.#streamError(stream, ErrorCode.CANCEL);
      return;
    }
    if (checkHeaders(headers, "response")) {
      this.#streamError(stream, ErrorCode.PROTOCOL_ERROR);
      return;
    }
    const status = headers.find(([n]) => n === ":status")?.[1] ?? "";
    // A status is three digits (RFC 9110 section 15); anything else is the peer's invention.
    if (!STATUS.test(status)) {
      this.#streamError(stream, ErrorCode.PROTOCOL_ERROR);
      return;
    }
    // 1xx responses are informational; the final one follows. A peer could send them forever instead of answering.
    if (status.startsWith("1") && !endStream) {
      this.#charge("informational responses");
      return;
    }
    stream.receiveHeaders(headers, endStream);
  }

  #onSettings(flags: number, streamId: number, payload: Buffer): void {
    if (streamId !== 0) throw protocolError("SETTINGS on a stream");
    this.#charge("SETTINGS frames");
    if (flags & Flag.ACK) {
      if (payload.length !== 0) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
      return;
    }
    if (payload.length % 6 !== 0) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6");
    if (payload.length / 6 > MAX_SETTINGS_ENTRIES) {
      throw new H2Error(ErrorCode.ENHANCE_YOUR_CALM, `SETTINGS with over ${MAX_SETTINGS_ENTRIES} entries`);
    }
    for (let pos = 0; pos < payload.length; pos += 6) {
      const id = payload.readUInt16BE(pos);
      const value = payload.readUInt32BE(pos + 2);
      if (id === Setting.INITIAL_WINDOW_SIZE) {
        if (value > MAX_WINDOW) throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large");
        const delta = value - this.#peerWindow;
        this.#peerWindow = value;
        for (const s of this.#streams.values()) s.sendWindow += delta;
      } else if (id === Setting.MAX_FRAME_SIZE) {
        if (value < DEFAULT_MAX_FRAME_SIZE || value > MAX_FRAME_SIZE_LIMIT) throw protocolError("bad MAX_FRAME_SIZE");
        this.#peerMaxFrame = value;
      } else if (id === Setting.MAX_CONCURRENT_STREAMS) this.#peerMaxStreams = value;
      else if (id === Setting.ENABLE_PUSH && value > 1) throw protocolError("bad ENABLE_PUSH");
      // HEADER_TABLE_SIZE needs nothing: the encoder never uses the dynamic table.
    }
    this.#frame(FrameType.SETTINGS, Flag.ACK, 0);
    if (!this.#settingsSeen) {
      this.#settingsSeen = true;
      clearTimeout(this.#settingsTimer);
    }
    this.#resumeWaiting();
  }

  #onWindowUpdate(streamId: number, payload: Buffer): void {
    if (payload.length !== 4) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE must carry 4 bytes");
    const increment = payload.readUInt32BE(0) & 0x7fffffff;
    if (increment < SMALL_WINDOW_UPDATE) this.#charge("small WINDOW_UPDATEs");
    if (streamId === 0) {
      if (increment === 0) throw protocolError("WINDOW_UPDATE of 0");
      this.#connSendWindow += increment;
      if (this.#connSendWindow > MAX_WINDOW) throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, "window over 2^31-1");
      if (this.#connSendWindow > 0) this.#connStalledSince = -1;
      this.#resumeWaiting();
      return;
    }
    const stream = this.#streams.get(streamId);
    if (!stream) {
      this.#checkKnown(streamId, "WINDOW_UPDATE");
      this.#charge("WINDOW_UPDATEs for closed streams");
      return;
    }
    if (increment === 0) {
      this.#streamError(stream, ErrorCode.PROTOCOL_ERROR);
      return;
    }
    stream.sendWindow += increment;
    if (stream.sendWindow > MAX_WINDOW) {
      this.#streamError(stream, ErrorCode.FLOW_CONTROL_ERROR);
      return;
    }
    this.flushStream(stream);
  }

  #onReset(streamId: number, payload: Buffer): void {
    if (streamId === 0) throw protocolError("RST_STREAM on stream 0");
    if (payload.length !== 4) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM must carry 4 bytes");
    const stream = this.#streams.get(streamId);
    if (!stream) {
      this.#checkKnown(streamId, "RST_STREAM");
      this.#charge("RST_STREAMs for closed streams");
      return;
    }
    if (this.role === "server" && !stream.headersDone) this.#chargeEarlyReset();
    stream.receiveReset(payload.readUInt32BE(0));
  }

  #chargeEarlyReset(): void {
    if (!this.#earlyResets.take() && !this.#goawaySent) {
      this.#error = new H2Error(ErrorCode.ENHANCE_YOUR_CALM, "too many streams reset before they were answered");
      this.#goaway(ErrorCode.ENHANCE_YOUR_CALM, this.#error.message);
    }
  }

  /** One frame of FRAME_BUDGET's kinds: past the budget, a connection error (ENHANCE_YOUR_CALM). */
  #charge(what: string): void {
    if (!this.#frameBudget.take()) {
      const { burst, perSecond } = this.#frameBudget.limit;
      throw new H2Error(ErrorCode.ENHANCE_YOUR_CALM, `flood of ${what} (over ${burst} at once, ${perSecond}/s)`);
    }
  }

  /** `stream` has data and no window to send it in: the stall clocks start (or stop, for a window that is open). */
  #stalled(stream: H2Stream): void {
    const now = performance.now();
    if (stream.sendWindow > 0) stream.stalledSince = -1;
    else if (stream.stalledSince < 0) stream.stalledSince = now;
    if (this.#connSendWindow > 0) this.#connStalledSince = -1;
    else if (this.#connStalledSince < 0) this.#connStalledSince = now;
    if ((stream.stalledSince >= 0 || this.#connStalledSince >= 0) && !this.#stallTimer) {
      this.#stallTimer = setTimeout(() => this.#checkStalls(), this.#stallTimeoutMs);
    }
  }

  /** Resets the streams, or closes the session, whose data waited stallTimeoutMs on a closed window. */
  #checkStalls(): void {
    this.#stallTimer = undefined;
    if (this.#destroyed) return;
    const now = performance.now();
    const limit = this.#stallTimeoutMs;
    // Timers fire whole milliseconds after they were set; the clocks read fractions.
    const due = (since: number) => since >= 0 && now - since >= limit - 1;
    const connStalled = this.#connStalledSince >= 0 && this.#connSendWindow <= 0 && this.#waiting.size > 0;
    if (connStalled && due(this.#connStalledSince)) {
      this.#fail(
        new H2Error(
          ErrorCode.ENHANCE_YOUR_CALM,
          `peer kept the connection window closed for ${limit} ms with data waiting`,
        ),
      );
      return;
    }
    let next = connStalled ? limit - (now - this.#connStalledSince) : Number.POSITIVE_INFINITY;
    if (!connStalled) this.#connStalledSince = -1;
    for (const stream of [...this.#waiting]) {
      if (stream.stalledSince < 0 || stream.sendWindow > 0) continue;
      if (due(stream.stalledSince)) this.#streamError(stream, ErrorCode.CANCEL);
      else next = Math.min(next, limit - (now - stream.stalledSince));
    }
    if (next < Number.POSITIVE_INFINITY) this.#stallTimer = setTimeout(() => this.#checkStalls(), Math.max(1, next));
  }

  #onGoaway(streamId: number, payload: Buffer): void {
    if (streamId !== 0) throw protocolError("GOAWAY on a stream");
    if (payload.length < 8) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes");
    const last = payload.readUInt32BE(0) & 0x7fffffff;
    this.#goawayReceived = true;
    // Streams above `last` were never processed by the peer: they fail now, and may be retried elsewhere.
    for (const s of [...this.#streams.values()]) {
      if (this.role === "client" && s.id > last) s.receiveReset(ErrorCode.REFUSED_STREAM);
    }
    this.emit("goaway", payload.readUInt32BE(4));
    if (this.#streams.size === 0) this.#end();
  }

  /** A frame for a stream not in the table: fine if it was closed already, a protocol error if never opened. */
  #checkKnown(streamId: number, what: string): void {
    const ours = streamId % 2 === (this.role === "client" ? 1 : 0);
    const opened = ours ? streamId < this.#nextStreamId : streamId <= this.#lastStreamId;
    if (!opened) throw protocolError(`${what} on idle stream ${streamId}`);
  }

  #streamError(stream: H2Stream, code: number): void {
    stream.receiveReset(code);
    this.#frame(FrameType.RST_STREAM, 0, stream.id, u32(code));
  }

  #resumeWaiting(): void {
    for (const stream of [...this.#waiting]) {
      if (this.#blocked || this.#connSendWindow <= 0) return;
      this.flushStream(stream);
    }
  }

  /** Connection error: tell the peer why (GOAWAY), then close. */
  #fail(err: H2Error): void {
    if (this.#destroyed) return;
    this.#goaway(err.h2code, err.message);
    // destroy() writes out what is queued, this GOAWAY included, before closing the transport.
    this.destroy(err);
  }

  #goaway(code: number, debug = ""): void {
    if (this.#goawaySent) return;
    this.#goawaySent = true;
    this.#goawayFrame(this.role === "server" ? this.#lastStreamId : 0, code, debug);
  }

  #goawayFrame(lastStreamId: number, code: number, debug = ""): void {
    const payload = Buffer.alloc(8 + Buffer.byteLength(debug));
    payload.writeUInt32BE(lastStreamId, 0);
    payload.writeUInt32BE(code, 4);
    payload.write(debug, 8);
    this.#frame(FrameType.GOAWAY, 0, 0, payload);
  }

  #end(): void {
    this.#flush();
    this.#transport.end();
  }

  #frame(type: number, flags: number, streamId: number, payload?: Buffer): void {
    const header = Buffer.allocUnsafe(9);
    const length = payload?.length ?? 0;
    header.writeUIntBE(length, 0, 3);
    header[3] = type;
    header[4] = flags;
    header.writeUInt32BE(streamId, 5);
    this.#queue(header);
    if (payload && length > 0) this.#queue(payload);
  }

  #queue(buf: Buffer): void {
    if (this.#destroyed) return;
    this.#out.push(buf);
    this.#outBytes += buf.length;
    if (this.#outBytes >= BATCH_BYTES) this.#flush();
    else if (!this.#flushQueued) {
      this.#flushQueued = true;
      queueMicrotask(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushQueued = false;
    if (this.#out.length === 0) return;
    const out = this.#out;
    const bytes = this.#outBytes;
    this.#out = [];
    this.#outBytes = 0;
    if (!this.#transport.writable) return;
    if (!this.#transport.write(out, bytes)) this.#blocked = true;
  }
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}
