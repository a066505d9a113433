import { fc, testProp } from "@fast-check/ava";
import { H2Error } from "../../../agent/h2/errors.js";
import { encodeHeaders, type HeaderList, HpackDecoder } from "../../../agent/h2/hpack.js";
import { FEW } from "./settings.js";

/**
 * HPACK: ambit's encoder round-trips any header list; the decoder agrees with a model of the dynamic table (RFC 7541
 * section 4) over sequences of blocks that index, evict and resize it; and any bytes either decode to fields no
 * bigger than the block or the table allow, or raise a COMPRESSION_ERROR.
 */

/** The first entries of the static table (RFC 7541 Appendix A) the model refers to, with their 1-based index. */
const STATIC: [number, string, string][] = [
  [1, ":authority", ""],
  [2, ":method", "GET"],
  [3, ":method", "POST"],
  [4, ":path", "/"],
  [8, ":status", "200"],
  [16, "accept-encoding", "gzip, deflate"],
  [28, "content-length", ""],
  [58, "user-agent", ""],
  [61, "www-authenticate", ""],
];

/** Huffman-coded strings from RFC 7541 Appendix C, so the model exercises the Huffman decoder too. */
const HUFFMAN: [string, string][] = [
  ["www.example.com", "f1e3c2e5f23a6ba0ab90f4ff"],
  ["no-cache", "a8eb10649cbf"],
  ["custom-key", "25a849e95ba97d7f"],
  ["custom-value", "25a849e95bb8e8b4bf"],
  ["", ""],
];

/** Octet strings: HPACK strings are octets, which the decoder gives back as latin1. */
const octets = (maxLength: number) =>
  fc.string({ unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)), maxLength });

/** RFC 7541 5.1 integers for the model's own blocks: written apart from hpack.ts, so it checks the decoder. */
function pushInteger(out: number[], value: number, prefixBits: number, flags: number): void {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    out.push(flags | value);
    return;
  }
  out.push(flags | max);
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
}

type Str = { plain: string } | { huffman: number };

function pushString(out: number[], s: Str): string {
  if ("plain" in s) {
    const bytes = Buffer.from(s.plain, "latin1");
    pushInteger(out, bytes.length, 7, 0);
    out.push(...bytes);
    return s.plain;
  }
  const [text, hex] = HUFFMAN[s.huffman % HUFFMAN.length] as [string, string];
  const bytes = Buffer.from(hex, "hex");
  pushInteger(out, bytes.length, 7, 0x80);
  out.push(...bytes);
  return text;
}

type Op =
  | { op: "static"; pick: number }
  | { op: "dynamic"; pick: number }
  | { op: "literal"; mode: "incremental" | "without" | "never"; name: Str | { index: number }; value: Str };

/** Dynamic table model: newest first, sizes as RFC 7541 section 4.1 counts them. */
class Table {
  entries: [string, string][] = [];
  size = 0;
  constructor(public max: number) {}

  insert(name: string, value: string): void {
    this.entries.unshift([name, value]);
    this.size += name.length + value.length + 32;
    this.evict();
  }

  resize(max: number): void {
    this.max = max;
    this.evict();
  }

  evict(): void {
    while (this.size > this.max) {
      const [n, v] = this.entries.pop() as [string, string];
      this.size -= n.length + v.length + 32;
    }
  }
}

/** Encodes one block of `ops` against the model, returning the block and the fields the decoder must give. */
function encodeBlock(table: Table, resize: number[], ops: Op[]): { block: Buffer; fields: HeaderList } {
  const out: number[] = [];
  const fields: HeaderList = [];
  for (const size of resize) {
    pushInteger(out, size, 5, 0x20);
    table.resize(size);
  }
  for (const op of ops) {
    if (op.op === "static" || (op.op === "dynamic" && table.entries.length === 0)) {
      const [index, name, value] = STATIC[op.pick % STATIC.length] as [number, string, string];
      pushInteger(out, index, 7, 0x80);
      fields.push([name, value]);
    } else if (op.op === "dynamic") {
      const k = op.pick % table.entries.length;
      pushInteger(out, 62 + k, 7, 0x80);
      fields.push([...(table.entries[k] as [string, string])]);
    } else {
      const [prefix, flags] = op.mode === "incremental" ? [6, 0x40] : op.mode === "without" ? [4, 0] : [4, 0x10];
      let name: string;
      if ("index" in op.name) {
        const entry = STATIC[op.name.index % STATIC.length] as [number, string, string];
        pushInteger(out, entry[0], prefix, flags);
        name = entry[1];
      } else {
        pushInteger(out, 0, prefix, flags);
        name = pushString(out, op.name);
      }
      const value = pushString(out, op.value);
      fields.push([name, value]);
      if (op.mode === "incremental") table.insert(name, value);
    }
  }
  return { block: Buffer.from(out), fields };
}

const strArb: fc.Arbitrary<Str> = fc.oneof(
  { weight: 4, arbitrary: octets(40).map((plain) => ({ plain })) },
  // Now and then an entry bigger than a small table: adding it empties the table.
  { weight: 1, arbitrary: octets(600).map((plain) => ({ plain })) },
  { weight: 2, arbitrary: fc.nat().map((huffman) => ({ huffman })) },
);

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant("static" as const), pick: fc.nat() }),
  fc.record({ op: fc.constant("dynamic" as const), pick: fc.nat() }),
  fc.record({
    op: fc.constant("literal" as const),
    mode: fc.constantFrom("incremental" as const, "without" as const, "never" as const),
    name: fc.oneof(strArb, fc.record({ index: fc.nat() })),
    value: strArb,
  }),
);

const blockArb = fc.record({
  resize: fc.array(fc.nat({ max: 8192 }), { maxLength: 2 }),
  ops: fc.array(opArb, { maxLength: 12 }),
  /** End the block with a reference one past the newest table's oldest entry: evicted, so a COMPRESSION_ERROR. */
  beyond: fc.boolean(),
});

testProp(
  "the decoder agrees with a model of the dynamic table over a sequence of blocks",
  [fc.integer({ min: 0, max: 8192 }), fc.array(blockArb, { minLength: 1, maxLength: 6 })],
  (t, limit, blocks) => {
    const decoder = new HpackDecoder(limit);
    const table = new Table(limit);
    for (const { resize, ops, beyond } of blocks) {
      const { block, fields } = encodeBlock(
        table,
        resize.map((s) => s % (limit + 1)),
        ops,
      );
      if (!beyond) {
        t.deepEqual(decoder.decode(block), fields);
        continue;
      }
      const past: number[] = [];
      pushInteger(past, 62 + table.entries.length, 7, 0x80);
      const err = t.throws(() => decoder.decode(Buffer.concat([block, Buffer.from(past)])), { instanceOf: H2Error });
      t.is(err?.code, "compression_error");
      return;
    }
  },
);

/** Header names as HTTP/2 carries them: lower case tokens, often one of the static table's. */
const nameArb = fc.oneof(
  fc.constantFrom(...STATIC.map(([, n]) => n), ":scheme", "baggage", "forwarded"),
  fc.stringMatching(/^[a-z0-9!#$%&'*+.^_`|~-]{1,30}$/),
);

testProp(
  "decode(encodeHeaders(x)) is x for any header list",
  [fc.array(fc.tuple(nameArb, fc.oneof(octets(100), fc.constantFrom("GET", "200", "/", ""))), { maxLength: 20 })],
  (t, headers) => {
    t.deepEqual(new HpackDecoder().decode(encodeHeaders(headers)), headers);
  },
);

testProp(
  "encodeHeaders output round-trips through a decoder that has already filled its table",
  [fc.array(blockArb, { maxLength: 3 }), fc.array(fc.tuple(nameArb, octets(60)), { maxLength: 10 })],
  (t, earlier, headers) => {
    const decoder = new HpackDecoder();
    const table = new Table(4096);
    for (const { ops } of earlier) decoder.decode(encodeBlock(table, [], ops).block);
    t.deepEqual(decoder.decode(encodeHeaders(headers)), headers);
  },
  { numRuns: FEW },
);

/** Valid blocks with bytes overwritten, cut short or run on, and plain junk. */
const hostileBlockArb = fc.oneof(
  fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b)),
  fc
    .tuple(blockArb, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }), fc.nat())
    .map(([{ resize, ops }, edits, cut]) => {
      const { block } = encodeBlock(new Table(4096), resize, ops);
      for (const [at, byte] of edits) if (block.length > 0) block[at % block.length] = byte;
      return block.subarray(0, block.length === 0 ? 0 : cut % (block.length + 1));
    }),
);

testProp(
  "any bytes: fields no bigger than the block or the table allow, or a COMPRESSION_ERROR",
  [fc.integer({ min: 0, max: 8192 }), fc.array(hostileBlockArb, { minLength: 1, maxLength: 6 })],
  (t, limit, blocks) => {
    const decoder = new HpackDecoder(limit);
    for (const block of blocks) {
      let fields: HeaderList;
      try {
        fields = decoder.decode(block);
      } catch (err) {
        t.true(err instanceof H2Error, `not an H2Error: ${String(err)}`);
        t.is((err as H2Error).code, "compression_error");
        // The connection is closed on a compression error: its table is lost, so nothing more is decoded.
        return;
      }
      t.true(Array.isArray(fields));
      for (const field of fields) {
        t.true(Array.isArray(field) && field.length === 2 && field.every((s) => typeof s === "string"));
        // A field comes from the static table, the dynamic one (at most `limit`) or the block itself; a Huffman
        // string decodes to at most 8/5 of its length (5 bits is the shortest code).
        const [name, value] = field;
        t.true(name.length + value.length <= Math.max(limit, Math.ceil((block.length * 8) / 5), 64));
      }
    }
    t.pass();
  },
);
