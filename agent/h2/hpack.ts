/**
 * HPACK (RFC 7541). The decoder is complete (static and dynamic tables, Huffman strings, size updates), because a
 * peer may use all of it. The encoder never indexes and never Huffman-codes: every field is a literal "without
 * indexing" (by static name index where one exists), which is always valid and keeps no state to get out of sync.
 */
import { DEFAULT_HEADER_TABLE_SIZE } from "./constants.js";
import { compressionError } from "./errors.js";
import { huffmanDecode } from "./huffman.js";

/** Header fields as an ordered list of [name, value]; names are lower case. */
export type HeaderList = [string, string][];

const STATIC: readonly [string, string][] = [
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];

/** First static index (1-based) of each name, and of each exact name/value pair. */
const STATIC_NAME = new Map<string, number>();
const STATIC_PAIR = new Map<string, number>();
for (const [i, [name, value]] of STATIC.entries()) {
  if (!STATIC_NAME.has(name)) STATIC_NAME.set(name, i + 1);
  if (value !== "") STATIC_PAIR.set(`${name}\0${value}`, i + 1);
}

/** RFC 7541 section 4.1: an entry's size counts 32 octets of overhead besides its name and value. */
const ENTRY_OVERHEAD = 32;
/** Far above any header block HBONE sends; bounds what a hostile integer can ask for. */
const MAX_INTEGER = 2 ** 24;

/**
 * What one decoded header list may hold. `maxListSize` counts as SETTINGS_MAX_HEADER_LIST_SIZE does (RFC 9113
 * section 6.5.2): each field's name and value plus 32 octets.
 */
export interface HeaderLimits {
  maxListSize: number;
  maxFields: number;
}

const UNLIMITED: HeaderLimits = { maxListSize: Number.POSITIVE_INFINITY, maxFields: Number.POSITIVE_INFINITY };

export class HpackDecoder {
  /** Newest entry last; index 62 is the newest. */
  readonly #dynamic: [string, string][] = [];
  #size = 0;
  #maxSize = DEFAULT_HEADER_TABLE_SIZE;
  /** The most the peer may set the table to: our SETTINGS_HEADER_TABLE_SIZE. */
  readonly #limit: number;

  constructor(limit = DEFAULT_HEADER_TABLE_SIZE) {
    this.#limit = limit;
    this.#maxSize = limit;
  }

  /**
   * Decodes one header block. A block whose list would pass `limits` is still decoded to its end, and its
   * insertions still made, so the dynamic table stays the one the peer's encoder assumes and the connection stays
   * usable; only the fields are dropped (undefined is returned), and the caller refuses the stream. Nothing kept
   * grows with the expansion: a 1-byte reference to a 4 KiB table entry, repeated, stops counting at the limit
   * instead of growing a list (and, joined by a caller, a string) by 4 KiB a byte. A block that cannot be decoded
   * is a COMPRESSION_ERROR (thrown): the tables are out of step and the connection cannot go on.
   */
  decode(block: Buffer): HeaderList;
  decode(block: Buffer, limits: HeaderLimits): HeaderList | undefined;
  decode(block: Buffer, limits: HeaderLimits = UNLIMITED): HeaderList | undefined {
    const out: HeaderList = [];
    let listSize = 0;
    let over = false;
    // Fields decoded so far, kept or not: a table size update may only come before the first.
    let fields = 0;
    const emit = (name: string, value: string) => {
      fields++;
      if (over) return;
      listSize += name.length + value.length + ENTRY_OVERHEAD;
      if (listSize > limits.maxListSize || out.length >= limits.maxFields) {
        over = true;
        out.length = 0;
        return;
      }
      out.push([name, value]);
    };
    let pos = 0;
    const integer = (prefixBits: number): number => {
      const mask = (1 << prefixBits) - 1;
      if (pos >= block.length) throw compressionError("truncated integer");
      let value = (block[pos++] as number) & mask;
      if (value < mask) return value;
      let shift = 0;
      for (;;) {
        if (pos >= block.length) throw compressionError("truncated integer");
        const b = block[pos++] as number;
        value += (b & 0x7f) * 2 ** shift;
        shift += 7;
        if (value > MAX_INTEGER) throw compressionError("integer too large");
        if ((b & 0x80) === 0) return value;
      }
    };
    const string = (): string => {
      if (pos >= block.length) throw compressionError("truncated string");
      const huffman = ((block[pos] as number) & 0x80) !== 0;
      const length = integer(7);
      if (pos + length > block.length) throw compressionError("truncated string");
      const raw = block.subarray(pos, pos + length);
      pos += length;
      return huffman ? huffmanDecode(raw) : raw.toString("latin1");
    };
    const entry = (index: number): [string, string] => {
      if (index >= 1 && index <= STATIC.length) return STATIC[index - 1] as [string, string];
      const d = this.#dynamic[this.#dynamic.length - 1 - (index - STATIC.length - 1)];
      if (index === 0 || !d) throw compressionError(`header index ${index} out of range`);
      return d;
    };
    while (pos < block.length) {
      const b = block[pos] as number;
      if (b & 0x80) {
        const [name, value] = entry(integer(7));
        emit(name, value);
      } else if (b & 0x40) {
        const index = integer(6);
        const name = index === 0 ? string() : entry(index)[0];
        const value = string();
        emit(name, value);
        this.#insert(name, value);
      } else if (b & 0x20) {
        if (fields > 0) throw compressionError("dynamic table size update after a header field");
        const size = integer(5);
        if (size > this.#limit) throw compressionError(`table size ${size} above the advertised ${this.#limit}`);
        this.#maxSize = size;
        this.#evict();
      } else {
        // Literal without indexing (0000) or never indexed (0001): same layout, nothing stored.
        const index = integer(4);
        const name = index === 0 ? string() : entry(index)[0];
        emit(name, string());
      }
    }
    return over ? undefined : out;
  }

  #insert(name: string, value: string): void {
    this.#dynamic.push([name, value]);
    this.#size += name.length + value.length + ENTRY_OVERHEAD;
    this.#evict();
  }

  #evict(): void {
    while (this.#size > this.#maxSize) {
      const oldest = this.#dynamic.shift();
      if (!oldest) break;
      this.#size -= oldest[0].length + oldest[1].length + ENTRY_OVERHEAD;
    }
  }
}

function pushInteger(out: number[], value: number, prefixBits: number, firstByteFlags: number): void {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    out.push(firstByteFlags | value);
    return;
  }
  out.push(firstByteFlags | max);
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
}

function pushString(out: number[], s: string): void {
  const bytes = Buffer.from(s, "latin1");
  pushInteger(out, bytes.length, 7, 0);
  for (const b of bytes) out.push(b);
}

/** Encode a header list statelessly (see the file comment). */
export function encodeHeaders(headers: HeaderList): Buffer {
  const out: number[] = [];
  for (const [name, value] of headers) {
    const pair = STATIC_PAIR.get(`${name}\0${value}`);
    if (pair !== undefined) {
      pushInteger(out, pair, 7, 0x80);
      continue;
    }
    const index = STATIC_NAME.get(name);
    if (index !== undefined) pushInteger(out, index, 4, 0);
    else {
      out.push(0);
      pushString(out, name);
    }
    pushString(out, value);
  }
  return Buffer.from(out);
}
