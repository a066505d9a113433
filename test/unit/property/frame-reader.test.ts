import { fc, testProp } from "@fast-check/ava";
import { Flag, FrameType } from "../../../agent/h2/constants.js";
import { H2Error } from "../../../agent/h2/errors.js";
import { FrameReader, type FrameSink } from "../../../agent/h2/frame-reader.js";
import { FEW } from "./settings.js";

/**
 * The frame reader against a model: frames built here, encoded, cut at arbitrary points and pushed from ONE buffer
 * that is overwritten after every push (as the poll loop's read buffer is), must come back exactly; arbitrary bytes
 * must give the same frames and the same typed error however they are cut.
 */

interface Frame {
  type: number;
  flags: number;
  stream: number;
  /** DATA: the data only; padding is `pad` bytes after it (PADDED flag set when pad is defined). */
  payload: string;
  pad?: number;
}

type Seen =
  | { kind: "frame"; type: number; flags: number; stream: number; payload: string }
  | { kind: "data"; stream: number; flags: number; length: number; data: string; padding: number };

function encode(f: Frame, reservedBit: boolean): Buffer {
  const data = Buffer.from(f.payload, "hex");
  const body = f.pad === undefined ? data : Buffer.concat([Buffer.from([f.pad]), data, Buffer.alloc(f.pad, 0xaa)]);
  const head = Buffer.alloc(9);
  head.writeUIntBE(body.length, 0, 3);
  head[3] = f.type;
  head[4] = f.flags;
  head.writeUInt32BE((f.stream | (reservedBit ? 0x80000000 : 0)) >>> 0, 5);
  return Buffer.concat([head, body]);
}

/** What the reader must report for a frame it accepted. */
function expected(f: Frame): Seen {
  const data = Buffer.from(f.payload, "hex");
  if (f.type !== FrameType.DATA) {
    return { kind: "frame", type: f.type, flags: f.flags, stream: f.stream, payload: f.payload };
  }
  const padding = f.pad === undefined ? 0 : f.pad + 1;
  return { kind: "data", stream: f.stream, flags: f.flags, length: data.length + padding, data: f.payload, padding };
}

/** Records what the sink is told, copying every slice at once (they are lent for the call only). */
class Recorder implements FrameSink {
  readonly seen: Seen[] = [];
  #data: Buffer[] = [];

  frame(type: number, flags: number, stream: number, payload: Buffer): void {
    this.seen.push({ kind: "frame", type, flags, stream, payload: payload.toString("hex") });
  }

  dataStart(stream: number, flags: number, length: number): void {
    this.#data = [];
    this.seen.push({ kind: "data", stream, flags, length, data: "", padding: -1 });
  }

  data(_stream: number, chunk: Buffer): void {
    this.#data.push(Buffer.from(chunk));
  }

  dataEnd(stream: number, flags: number, padding: number): void {
    const last = this.seen.at(-1);
    if (last?.kind !== "data" || last.stream !== stream || last.flags !== flags)
      throw new Error("dataEnd without dataStart");
    last.data = Buffer.concat(this.#data).toString("hex");
    last.padding = padding;
  }
}

const SCRIBBLE = 0xee;

/**
 * Feeds `bytes` cut at `cuts` through one reused buffer, scribbled over after each push. Returns what was seen and
 * the error that stopped it, if any.
 */
function run(bytes: Buffer, cuts: number[], maxFrameSize: number): { seen: Seen[]; error?: unknown } {
  const sink = new Recorder();
  const reader = new FrameReader(sink, maxFrameSize);
  const shared = Buffer.alloc(Math.max(1, bytes.length));
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let from = 0;
  try {
    for (const to of [...points, bytes.length]) {
      if (to <= from) continue;
      const n = bytes.copy(shared, 0, from, to);
      reader.push(shared.subarray(0, n));
      shared.fill(SCRIBBLE, 0, n);
      from = to;
    }
  } catch (error) {
    return { seen: sink.seen, error };
  }
  return { seen: sink.seen };
}

const MAX_FRAME = 512;

const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  // DATA, padded or not; its length (data + pad length byte + padding) stays within MAX_FRAME.
  fc
    .record({
      flags: fc.integer({ min: 0, max: 255 }),
      stream: fc.integer({ min: 0, max: 0x7fffffff }),
      payload: fc.uint8Array({ maxLength: 200 }),
      pad: fc.option(fc.integer({ min: 0, max: 255 }), { nil: undefined }),
    })
    .map(({ flags, stream, payload, pad }) => {
      const data = Buffer.from(payload).toString("hex");
      if (pad === undefined) return { type: FrameType.DATA, flags: flags & ~Flag.PADDED, stream, payload: data };
      return { type: FrameType.DATA, flags: flags | Flag.PADDED, stream, payload: data, pad };
    }),
  // Every other type, known or not, with any flags: the reader delivers them whole and judges nothing.
  fc.record({
    type: fc.integer({ min: 1, max: 255 }),
    flags: fc.integer({ min: 0, max: 255 }),
    stream: fc.integer({ min: 0, max: 0x7fffffff }),
    payload: fc.uint8Array({ maxLength: MAX_FRAME }).map((b) => Buffer.from(b).toString("hex")),
  }),
);

const cutsArb = fc.array(fc.nat(), { maxLength: 40 });

testProp(
  "well-formed frames cut anywhere, from a reused buffer, come back exactly",
  [fc.array(frameArb, { maxLength: 12 }), fc.array(fc.boolean(), { maxLength: 12 }), cutsArb],
  (t, frames, reserved, cuts) => {
    const bytes = Buffer.concat(frames.map((f, i) => encode(f, reserved[i] ?? false)));
    const { seen, error } = run(bytes, cuts, MAX_FRAME);
    t.is(error, undefined);
    t.deepEqual(seen, frames.map(expected));
  },
);

testProp(
  "one byte at a time gives the same frames as one push",
  [fc.array(frameArb, { maxLength: 6 })],
  (t, frames) => {
    const bytes = Buffer.concat(frames.map((f) => encode(f, false)));
    const everyByte = Array.from({ length: bytes.length }, (_, i) => i);
    t.deepEqual(run(bytes, everyByte, MAX_FRAME).seen, frames.map(expected));
  },
  { numRuns: FEW },
);

/** Frames, some corrupted, and raw junk: what a hostile peer may send. */
const hostileArb = fc
  .array(
    fc.oneof(
      frameArb.map((f) => encode(f, false)),
      fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
      // A frame whose header or pad length byte is overwritten.
      fc.tuple(frameArb, fc.nat(), fc.integer({ min: 0, max: 255 })).map(([f, at, byte]) => {
        const b = encode(f, false);
        b[at % Math.min(b.length, 10)] = byte;
        return b;
      }),
    ),
    { maxLength: 8 },
  )
  .map((parts) => Buffer.concat(parts));

testProp(
  "any bytes, cut anywhere: the same frames and the same typed error as in one push",
  [hostileArb, cutsArb, fc.integer({ min: 0, max: MAX_FRAME })],
  (t, bytes, cuts, maxFrameSize) => {
    const whole = run(bytes, [], maxFrameSize);
    const cut = run(bytes, cuts, maxFrameSize);
    for (const { error } of [whole, cut]) {
      if (error === undefined) continue;
      t.true(error instanceof H2Error, `not an H2Error: ${String(error)}`);
      t.regex((error as H2Error).code, /^(frame_size_error|protocol_error)$/);
    }
    t.is((cut.error as H2Error | undefined)?.message, (whole.error as H2Error | undefined)?.message);
    t.deepEqual(cut.seen, whole.seen);
    // Bounded: nothing longer than the limit is ever delivered whole or announced as DATA.
    for (const s of cut.seen) {
      t.true((s.kind === "frame" ? s.payload.length / 2 : s.length) <= maxFrameSize);
    }
  },
);
