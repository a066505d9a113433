/**
 * Splits the byte stream of an HTTP/2 connection into frames. DATA payloads are handed on as they arrive, slice by
 * slice, never reassembled: a 1 MiB DATA frame spread over many TLS records costs no copy here. Every other frame
 * is delivered whole. Slices handed to the sink point into the pushed buffer and are valid only during the call
 * when the caller reuses that buffer; the reader itself keeps nothing of it past push.
 */
import { ErrorCode, Flag, FRAME_HEADER_LENGTH, FrameType } from "./constants.js";
import { H2Error, protocolError } from "./errors.js";

export interface FrameSink {
  /** A complete non-DATA frame. */
  frame(type: number, flags: number, streamId: number, payload: Buffer): void;
  /** A DATA frame starts; `length` is the whole frame (padding included), which is what flow control counts. */
  dataStart(streamId: number, flags: number, length: number): void;
  data(streamId: number, chunk: Buffer): void;
  /** The DATA frame is over; `padding` bytes of it (pad length field included) carried no data. */
  dataEnd(streamId: number, flags: number, padding: number): void;
}

enum Mode {
  Header,
  Payload,
  PadLength,
  Data,
  Padding,
}

export class FrameReader {
  /** Bytes of a frame header (or a pad length) cut by a read: at most 8. */
  #pending: Buffer | undefined;
  /**
   * A non-DATA frame's payload cut by reads, filled in place: the frame's length is known from its header, so each
   * byte is copied once. Joining what had arrived on every read instead made a 512 KiB frame sent in 1-byte TLS
   * records cost ~130 GB of copying.
   */
  #payload: Buffer | undefined;
  #filled = 0;
  #mode = Mode.Header;
  #type = 0;
  #flags = 0;
  #stream = 0;
  #length = 0;
  #dataLeft = 0;
  #padLeft = 0;
  #padding = 0;
  #stopped = false;

  constructor(
    readonly sink: FrameSink,
    /** Our SETTINGS_MAX_FRAME_SIZE: anything longer is a connection error. */
    readonly maxFrameSize: number,
  ) {}

  /** Stop delivering frames (the session is being torn down). */
  stop(): void {
    this.#stopped = true;
    this.#pending = undefined;
    this.#payload = undefined;
  }

  push(chunk: Buffer): void {
    let buf = chunk;
    if (this.#pending) {
      buf = Buffer.concat([this.#pending, chunk]);
      this.#pending = undefined;
    }
    let pos = 0;
    while (!this.#stopped) {
      const available = buf.length - pos;
      if (this.#mode === Mode.Header) {
        if (available < FRAME_HEADER_LENGTH) break;
        this.#length = buf.readUIntBE(pos, 3);
        this.#type = buf[pos + 3] as number;
        this.#flags = buf[pos + 4] as number;
        this.#stream = buf.readUInt32BE(pos + 5) & 0x7fffffff;
        pos += FRAME_HEADER_LENGTH;
        if (this.#length > this.maxFrameSize) {
          throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, `frame of ${this.#length} bytes (limit ${this.maxFrameSize})`);
        }
        if (this.#type === FrameType.DATA) this.#startData();
        else this.#mode = Mode.Payload;
      } else if (this.#mode === Mode.Payload) {
        let payload: Buffer;
        if (this.#payload === undefined && available >= this.#length) {
          payload = buf.subarray(pos, pos + this.#length);
          pos += this.#length;
        } else {
          if (available === 0) break;
          this.#payload ??= Buffer.allocUnsafe(this.#length);
          const n = Math.min(this.#length - this.#filled, available);
          buf.copy(this.#payload, this.#filled, pos, pos + n);
          this.#filled += n;
          pos += n;
          if (this.#filled < this.#length) break;
          payload = this.#payload;
          this.#payload = undefined;
          this.#filled = 0;
        }
        this.#mode = Mode.Header;
        this.sink.frame(this.#type, this.#flags, this.#stream, payload);
      } else if (this.#mode === Mode.PadLength) {
        if (available < 1) break;
        const padLength = buf[pos++] as number;
        if (padLength >= this.#length) throw protocolError("DATA padding longer than the frame");
        this.#dataLeft = this.#length - 1 - padLength;
        this.#padLeft = padLength;
        this.#padding = padLength + 1;
        this.#mode = Mode.Data;
      } else if (this.#mode === Mode.Data) {
        if (this.#dataLeft === 0) {
          this.#mode = Mode.Padding;
          continue;
        }
        if (available === 0) break;
        const n = Math.min(this.#dataLeft, available);
        this.#dataLeft -= n;
        const slice = buf.subarray(pos, pos + n);
        pos += n;
        this.sink.data(this.#stream, slice);
      } else {
        if (this.#padLeft > 0) {
          if (available === 0) break;
          const n = Math.min(this.#padLeft, available);
          this.#padLeft -= n;
          pos += n;
          continue;
        }
        this.#mode = Mode.Header;
        this.sink.dataEnd(this.#stream, this.#flags, this.#padding);
      }
    }
    // A cut frame header or pad length waits for the next push: copied when it lies in the caller's buffer, which
    // may be reused once this returns (a poll loop's shared read buffer); a joined buffer above is ours already.
    if (!this.#stopped && pos < buf.length) {
      this.#pending = buf === chunk ? Buffer.from(buf.subarray(pos)) : buf.subarray(pos);
    }
  }

  #startData(): void {
    this.sink.dataStart(this.#stream, this.#flags, this.#length);
    this.#padLeft = 0;
    this.#padding = 0;
    if (this.#flags & Flag.PADDED) {
      if (this.#length === 0) throw protocolError("padded DATA frame without a pad length");
      this.#mode = Mode.PadLength;
    } else {
      this.#dataLeft = this.#length;
      this.#mode = Mode.Data;
    }
  }
}
