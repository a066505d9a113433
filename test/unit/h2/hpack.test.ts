import test from "ava";
import { H2Error } from "../../../agent/h2/errors.js";
import { encodeHeaders, type HeaderList, HpackDecoder } from "../../../agent/h2/hpack.js";
import { huffmanDecode } from "../../../agent/h2/huffman.js";

test("decodes RFC 7541 C.4.1: indexed fields and a Huffman-coded literal added to the dynamic table", (t) => {
  const d = new HpackDecoder();
  const first = d.decode(Buffer.from("828684418cf1e3c2e5f23a6ba0ab90f4ff", "hex"));
  t.deepEqual(first, [
    [":method", "GET"],
    [":scheme", "http"],
    [":path", "/"],
    [":authority", "www.example.com"],
  ]);
  // C.4.2: the authority is now dynamic entry 62 (0xbe), plus a new Huffman literal.
  const second = d.decode(Buffer.from("828684be5886a8eb10649cbf", "hex"));
  t.deepEqual(second.at(-2), [":authority", "www.example.com"]);
  t.deepEqual(second.at(-1), ["cache-control", "no-cache"]);
});

test("encoder output decodes to the same list, with static indexes where they exist", (t) => {
  const headers: HeaderList = [
    [":method", "CONNECT"],
    [":authority", "10.0.0.7:8080"],
    ["baggage", "k8s.namespace.name=default,k8s.workload.name=client"],
    [":status", "200"],
    ["x-long", "v".repeat(300)],
  ];
  const block = encodeHeaders(headers);
  t.deepEqual(new HpackDecoder().decode(block), headers);
  t.is(encodeHeaders([[":status", "200"]]).toString("hex"), "88");
});

test("malformed blocks are compression errors, not crashes", (t) => {
  const bad = [
    "80", // index 0
    "ff00", // index 127 with an empty dynamic table
    "0f", // literal, name index needs continuation bytes
    "0085", // literal with a name length beyond the block
    "3fe21f", // table size update above the 4096 advertised
    "ffffffffffff7f", // integer overflow
  ];
  for (const hex of bad) {
    const block = Buffer.from(hex, "hex");
    const err = t.throws(() => new HpackDecoder().decode(block), { instanceOf: H2Error }, hex);
    t.is(err?.code, "compression_error", hex);
  }
});

test("Huffman strings: valid padding accepted, EOS or long padding refused", (t) => {
  t.is(huffmanDecode(Buffer.from("f1e3c2e5f23a6ba0ab90f4ff", "hex")), "www.example.com");
  t.is(huffmanDecode(Buffer.from("a8eb10649cbf", "hex")), "no-cache");
  t.throws(() => huffmanDecode(Buffer.from("ffffffff", "hex")), { instanceOf: H2Error });
  t.throws(() => huffmanDecode(Buffer.from("f1e3c2e5f23a6ba0ab90f4ffff", "hex")), { instanceOf: H2Error });
  t.throws(() => huffmanDecode(Buffer.from("00", "hex")), { instanceOf: H2Error }, "padding of zero bits");
});
