/**
 * Two H2Session transports joined in memory, standing in for the data plane's poll loop: no sockets. Like that loop,
 * each side reads into ONE buffer it reuses, and it scribbles over that buffer after every receive, so a session
 * (or stream) that keeps a view of received bytes past the call sees garbage. Delivery runs from setImmediate, as
 * an epoll callback would, in reads of a chosen size or one frame at a time.
 */
import { PREFACE } from "../../../agent/h2/constants.js";
import { H2Session, type SessionOptions } from "../../../agent/h2/session.js";
import type { Transport, TransportSink } from "../../../agent/h2/transport.js";

export interface MemoryOptions {
  /** Bytes per receive; "frames": exactly one frame per receive (the preface alone first). Default 16 KiB. */
  reads?: number | number[] | "frames";
  /** write returns false once this many bytes wait for delivery. Default 1 MiB. */
  highWater?: number;
}

/** What went through one direction, parsed into frames (type, flags, stream id, payload length). */
export interface FrameSeen {
  type: number;
  flags: number;
  streamId: number;
  length: number;
}

const SCRIBBLE = 0xee;

export class MemoryTransport implements Transport {
  readonly lendsReads = true;
  /** Frames this side wrote, as the peer received them. */
  readonly frames: FrameSeen[] = [];
  /** receive calls made on the peer, and the most bytes ever waiting here. */
  receives = 0;
  maxQueued = 0;
  peer: MemoryTransport | undefined;
  #sink: TransportSink | undefined;
  #backlog: Buffer[] = [];
  #queued = 0;
  #delivered = 0;
  #readIndex = 0;
  /** The peer's view of our byte stream, for frame parsing (what was delivered, not yet parsed). */
  #parse = Buffer.alloc(0);
  #parsedPreface = false;
  #paused = false;
  #wantsDrain = false;
  #ended = false;
  #finSent = false;
  #destroyed = false;
  #scheduled = false;
  readonly #readBuffer: Buffer;
  readonly #opts: MemoryOptions;

  constructor(opts: MemoryOptions = {}) {
    this.#opts = opts;
    this.#readBuffer = Buffer.alloc(1024 * 1024);
  }

  get writable(): boolean {
    return !this.#ended && !this.#destroyed;
  }

  get queuedBytes(): number {
    return this.#queued;
  }

  get paused(): boolean {
    return this.#paused;
  }

  start(sink: TransportSink): void {
    this.#sink = sink;
  }

  write(chunks: Buffer[], bytes: number): boolean {
    if (!this.writable) return false;
    for (const c of chunks) this.#backlog.push(c);
    this.#queued += bytes;
    this.maxQueued = Math.max(this.maxQueued, this.#queued);
    this.#schedule();
    const ok = this.#queued < (this.#opts.highWater ?? 1024 * 1024);
    if (!ok) this.#wantsDrain = true;
    return ok;
  }

  end(): void {
    this.#ended = true;
    this.#schedule();
  }

  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#backlog = [];
    this.#queued = 0;
    const peer = this.peer;
    setImmediate(() => {
      this.#sink?.closed();
      if (peer) peer.#sink?.closed();
    });
  }

  /** Stop delivering (the peer stops reading): writes pile up here. */
  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#pump();
    });
  }

  #pump(): void {
    const peer = this.peer;
    if (this.#paused || this.#destroyed || !peer) return;
    const target = peer.#sink;
    while (this.#queued > 0 && !this.#destroyed) {
      const n = Math.min(this.#nextRead(), this.#queued, peer.#readBuffer.length);
      this.#take(n, peer.#readBuffer);
      this.#track(peer.#readBuffer.subarray(0, n));
      this.receives++;
      target?.receive(peer.#readBuffer.subarray(0, n));
      // What a poll loop does next: read the next connection into the same buffer.
      peer.#readBuffer.fill(SCRIBBLE, 0, n);
    }
    if (this.#wantsDrain && !this.#destroyed) {
      this.#wantsDrain = false;
      this.#sink?.drained();
    }
    if (this.#ended && !this.#finSent && this.#queued === 0) {
      this.#finSent = true;
      target?.ended();
    }
  }

  #nextRead(): number {
    const reads = this.#opts.reads ?? 16 * 1024;
    if (typeof reads === "number") return reads;
    if (Array.isArray(reads)) return reads[this.#readIndex++ % reads.length] as number;
    const head = this.#peek(9);
    if (this.#delivered === 0 && head.equals(PREFACE.subarray(0, head.length))) return PREFACE.length;
    return head.length < 9 ? head.length : 9 + head.readUIntBE(0, 3);
  }

  #peek(n: number): Buffer {
    const first = this.#backlog[0] as Buffer;
    return first.length >= n ? first.subarray(0, n) : Buffer.concat(this.#backlog).subarray(0, n);
  }

  #take(n: number, into: Buffer): void {
    let filled = 0;
    while (filled < n) {
      const head = this.#backlog[0] as Buffer;
      const k = Math.min(head.length, n - filled);
      head.copy(into, filled, 0, k);
      filled += k;
      if (k === head.length) this.#backlog.shift();
      else this.#backlog[0] = head.subarray(k);
    }
    this.#queued -= n;
    this.#delivered += n;
  }

  #track(bytes: Buffer): void {
    let buf = Buffer.concat([this.#parse, bytes]);
    if (!this.#parsedPreface) {
      const k = Math.min(buf.length, PREFACE.length);
      if (buf.subarray(0, k).equals(PREFACE.subarray(0, k))) {
        if (k < PREFACE.length) {
          this.#parse = buf;
          return;
        }
        buf = buf.subarray(PREFACE.length);
      }
      this.#parsedPreface = true;
    }
    let pos = 0;
    while (buf.length - pos >= 9) {
      const length = buf.readUIntBE(pos, 3);
      if (buf.length - pos < 9 + length) break;
      this.frames.push({
        type: buf[pos + 3] as number,
        flags: buf[pos + 4] as number,
        streamId: buf.readUInt32BE(pos + 5) & 0x7fffffff,
        length,
      });
      pos += 9 + length;
    }
    this.#parse = Buffer.from(buf.subarray(pos));
  }
}

/** A client and a server session joined in memory; `clientSide` carries client -> server bytes. */
export function memoryPair(
  opts: { client?: Partial<SessionOptions>; server?: Partial<SessionOptions> } & MemoryOptions = {},
): { client: H2Session; server: H2Session; clientSide: MemoryTransport; serverSide: MemoryTransport } {
  const { client: clientOpts, server: serverOpts, ...memory } = opts;
  const clientSide = new MemoryTransport(memory);
  const serverSide = new MemoryTransport(memory);
  clientSide.peer = serverSide;
  serverSide.peer = clientSide;
  const server = new H2Session(serverSide, { role: "server", ...serverOpts });
  const client = new H2Session(clientSide, { role: "client", ...clientOpts });
  return { client, server, clientSide, serverSide };
}
