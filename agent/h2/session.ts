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
import { encodeHeaders, type HeaderList, HpackDecoder } from "./hpack.js";
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
  earlyResets?: ResetLimit;
}

export interface ResetLimit {
  /** Resets allowed at once. */
  burst: number;
  /** Resets allowed per second, sustained. */
  perSecond: number;
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
const EARLY_RESETS: ResetLimit = { burst: 1000, perSecond: 100 };

/** Frames queued in one turn are written together once they reach this size. */
const BATCH_BYTES = 64 * 1024;

interface HeaderBlock {
  streamId: number;
  endStream: boolean;
  chunks: Buffer[];
  size: number;
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
  #out: Buffer[] = [];
  #outBytes = 0;
  #flushQueued = false;
  #blocked = false;
  #goawaySent = false;
  #goawayReceived = false;
  #destroyed = false;
  #error: Error | undefined;
  readonly #resetLimit: ResetLimit;
  #resetTokens: number;
  #resetRefilledAt = performance.now();

  /** A bare Duplex is wrapped in a SocketTransport. */
  constructor(transport: Transport | Duplex, opts: SessionOptions) {
    super();
    this.role = opts.role;
    this.settings = { ...DEFAULT_LOCAL_SETTINGS, ...opts.settings };
    this.#transport = transport instanceof Duplex ? new SocketTransport(transport) : transport;
    this.lendsData = this.#transport.lendsReads;
    this.#nextStreamId = opts.role === "client" ? 1 : 2;
    this.#prefaceLeft = opts.role === "server" ? PREFACE.length : 0;
    this.#reader = new FrameReader(this, this.settings.maxFrameSize);
    this.#hpack = new HpackDecoder();
    this.#connRecvWindow = DEFAULT_WINDOW;
    this.#resetLimit = opts.earlyResets ?? EARLY_RESETS;
    this.#resetTokens = this.#resetLimit.burst;

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

  /** Client side: a new stream may be opened on this connection now. */
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
    if (!this.canRequest) throw new H2Error(ErrorCode.REFUSED_STREAM, "session cannot take a new stream");
    const id = this.#nextStreamId;
    this.#nextStreamId += 2;
    const stream = new H2Stream(id, this, this.#peerWindow, this.settings.streamWindow);
    this.#streams.set(id, stream);
    this.sendHeaders(stream, headers, false);
    return stream;
  }

  /** Graceful close: GOAWAY, no new streams; the connection ends when the last stream does. */
  close(): void {
    if (this.#destroyed) return;
    this.#goaway(ErrorCode.NO_ERROR);
    if (this.#streams.size === 0) this.#end();
  }

  /** Abrupt close: every stream is reset and the transport destroyed. */
  destroy(err?: Error): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#error ??= err;
    clearTimeout(this.#settingsTimer);
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
        this.#waiting.add(stream);
        return;
      }
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

  dataStart(streamId: number, _flags: number, length: number): void {
    if (this.#block) throw protocolError("DATA inside a header block");
    if (streamId === 0) throw protocolError("DATA on stream 0");
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
        if (!(flags & Flag.ACK)) this.#frame(FrameType.PING, Flag.ACK, 0, Buffer.from(payload));
        return;
      case FrameType.GOAWAY:
        this.#onGoaway(streamId, payload);
        return;
      case FrameType.PRIORITY:
        if (streamId === 0) throw protocolError("PRIORITY on stream 0");
        return;
      case FrameType.PUSH_PROMISE:
        throw protocolError("PUSH_PROMISE while push is disabled");
      default:
      // Unknown frame types are ignored (RFC 9113 section 4.1).
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
    this.#block = { streamId, endStream: (flags & Flag.END_STREAM) !== 0, chunks: [], size: 0 };
    this.#addBlockFragment(flags, payload.subarray(start, end));
  }

  #onContinuation(flags: number, streamId: number, payload: Buffer): void {
    if (!this.#block || this.#block.streamId !== streamId) throw protocolError("CONTINUATION without HEADERS");
    this.#addBlockFragment(flags, payload);
  }

  #addBlockFragment(flags: number, fragment: Buffer): void {
    const block = this.#block as HeaderBlock;
    const more = !(flags & Flag.END_HEADERS);
    // A fragment waiting for its CONTINUATION outlives this receive: copied, as the transport may reuse its buffer
    // (and a slice would pin a whole socket read). Blocks in one frame, nearly all of them, are decoded in place.
    block.chunks.push(more ? Buffer.from(fragment) : fragment);
    block.size += fragment.length;
    if (block.size > this.settings.maxHeaderListSize) {
      throw new H2Error(ErrorCode.ENHANCE_YOUR_CALM, `header block over ${this.settings.maxHeaderListSize} bytes`);
    }
    if (more) return;
    this.#block = undefined;
    // Decoded even for streams about to be refused: the HPACK table must stay in step with the peer's.
    const headers = this.#hpack.decode(
      block.chunks.length === 1 ? (block.chunks[0] as Buffer) : Buffer.concat(block.chunks),
    );
    if (this.role === "server") this.#onRequest(block.streamId, headers, block.endStream);
    else this.#onResponse(block.streamId, headers, block.endStream);
  }

  #onRequest(id: number, headers: HeaderList, endStream: boolean): void {
    const existing = this.#streams.get(id);
    if (existing) {
      // Trailers: only allowed to end the request.
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
      this.#frame(FrameType.RST_STREAM, 0, id, u32(ErrorCode.REFUSED_STREAM));
      return;
    }
    const malformed = checkHeaders(headers, "request");
    if (malformed) {
      this.#frame(FrameType.RST_STREAM, 0, id, u32(ErrorCode.PROTOCOL_ERROR));
      return;
    }
    const stream = new H2Stream(id, this, this.#peerWindow, this.settings.streamWindow);
    this.#streams.set(id, stream);
    if (endStream) stream.receiveEnd();
    this.emit("stream", stream, headers);
  }

  #onResponse(id: number, headers: HeaderList, endStream: boolean): void {
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
    if (checkHeaders(headers, "response")) {
      this.#streamError(stream, ErrorCode.PROTOCOL_ERROR);
      return;
    }
    const status = headers.find(([n]) => n === ":status")?.[1] ?? "";
    // 1xx responses are informational; the final one follows.
    if (status.startsWith("1") && !endStream) return;
    stream.receiveHeaders(headers, endStream);
  }

  #onSettings(flags: number, streamId: number, payload: Buffer): void {
    if (streamId !== 0) throw protocolError("SETTINGS on a stream");
    if (flags & Flag.ACK) {
      if (payload.length !== 0) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
      return;
    }
    if (payload.length % 6 !== 0) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6");
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
    if (streamId === 0) {
      if (increment === 0) throw protocolError("WINDOW_UPDATE of 0");
      this.#connSendWindow += increment;
      if (this.#connSendWindow > MAX_WINDOW) throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, "window over 2^31-1");
      this.#resumeWaiting();
      return;
    }
    const stream = this.#streams.get(streamId);
    if (!stream) {
      this.#checkKnown(streamId, "WINDOW_UPDATE");
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
      return;
    }
    if (this.role === "server" && !stream.headersDone) this.#chargeEarlyReset();
    stream.receiveReset(payload.readUInt32BE(0));
  }

  #chargeEarlyReset(): void {
    const now = performance.now();
    const { burst, perSecond } = this.#resetLimit;
    this.#resetTokens = Math.min(burst, this.#resetTokens + ((now - this.#resetRefilledAt) / 1000) * perSecond);
    this.#resetRefilledAt = now;
    this.#resetTokens -= 1;
    if (this.#resetTokens < 0 && !this.#goawaySent) {
      this.#error = new H2Error(ErrorCode.ENHANCE_YOUR_CALM, "too many streams reset before they were answered");
      this.#goaway(ErrorCode.ENHANCE_YOUR_CALM, this.#error.message);
    }
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
    const payload = Buffer.alloc(8 + Buffer.byteLength(debug));
    payload.writeUInt32BE(this.role === "server" ? this.#lastStreamId : 0, 0);
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
