/**
 * HPACK's Huffman code (RFC 7541, Appendix B) for decoding header strings. The code is canonical, so the bit
 * lengths of the 257 symbols (256 octets, then EOS) define it entirely; the codes are rebuilt from them at load.
 * ambit's own encoder never uses Huffman (raw strings are always valid), but peers such as nghttp2 do.
 */
import { compressionError } from "./errors.js";

const LENGTHS =
  "13,23,28,28,28,28,28,28,28,24,30,28,28,30,28,28,28,28,28,28,28,28,30,28,28,28,28,28,28,28,28,28,6,10,10,12,13,6," +
  "8,11,10,10,8,11,8,6,6,6,5,5,5,6,6,6,6,6,6,6,7,8,15,6,12,10,13,6,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,8,7,8," +
  "13,19,13,14,6,15,5,6,5,6,5,6,6,6,5,7,7,6,6,6,5,6,7,6,5,5,6,7,7,7,7,7,15,11,14,13,28,20,22,20,20,22,22,22,23,22,23," +
  "23,23,23,23,24,23,24,24,22,23,24,23,23,23,23,21,22,23,22,23,23,24,22,21,20,22,22,23,23,21,23,22,22,24,21,22,23,23," +
  "21,21,22,21,23,22,23,23,20,22,22,22,23,22,22,23,26,26,20,19,22,23,22,25,26,26,26,27,27,26,24,25,19,21,26,27,27,26," +
  "27,24,21,21,26,26,28,27,27,27,20,24,20,21,22,21,21,23,22,22,25,25,24,24,26,23,26,27,26,26,27,27,27,27,27,28,27,27," +
  "27,27,27,26,30";

const EOS = 256;

/**
 * The decoding tree as a flat array: node n's children are tree[2n] (bit 0) and tree[2n+1] (bit 1); a positive
 * entry is the next node, a negative one is a leaf holding -(symbol + 1), 0 is "no such code".
 */
function buildTree(): Int32Array {
  const lengths = LENGTHS.split(",").map(Number);
  const symbols = lengths.map((_, s) => s).sort((a, b) => (lengths[a] as number) - (lengths[b] as number) || a - b);
  const tree = new Int32Array(2 * 2 * symbols.length);
  let nodes = 1;
  let code = 0;
  let previous = lengths[symbols[0] as number] as number;
  for (const [i, symbol] of symbols.entries()) {
    const length = lengths[symbol] as number;
    if (i > 0) code = (code + 1) * 2 ** (length - previous);
    previous = length;
    let node = 0;
    for (let bit = length - 1; bit >= 0; bit--) {
      const slot = 2 * node + (Math.floor(code / 2 ** bit) % 2);
      if (bit === 0) tree[slot] = -(symbol + 1);
      else {
        if (tree[slot] === 0) tree[slot] = nodes++;
        node = tree[slot] as number;
      }
    }
  }
  return tree;
}

const TREE = buildTree();

/** Decode a Huffman-coded header string to octets (latin1), rejecting EOS and invalid padding as the RFC requires. */
export function huffmanDecode(input: Buffer): string {
  const out: number[] = [];
  let node = 0;
  let pendingBits = 0;
  let pendingAllOnes = true;
  for (const byte of input) {
    for (let bit = 7; bit >= 0; bit--) {
      const b = (byte >> bit) & 1;
      const next = TREE[2 * node + b] as number;
      if (next < 0) {
        const symbol = -next - 1;
        if (symbol === EOS) throw compressionError("EOS symbol inside a Huffman string");
        out.push(symbol);
        node = 0;
        pendingBits = 0;
        pendingAllOnes = true;
      } else if (next === 0) {
        throw compressionError("invalid Huffman code");
      } else {
        node = next;
        pendingBits += 1;
        pendingAllOnes &&= b === 1;
      }
    }
  }
  if (pendingBits > 7 || !pendingAllOnes) throw compressionError("invalid Huffman padding");
  return Buffer.from(out).toString("latin1");
}
