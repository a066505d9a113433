/**
 * One fuzz target per parser of peer or manifest input. A target takes any bytes and throws only when the parser
 * misbehaves: an error that is not the parser's typed one, or a result that breaks what the rest of the agent
 * assumes. `make fuzz` (fuzz.ts) drives them by coverage; replay.test.ts runs every saved input in `make test`.
 */
import { isIP } from "node:net";
import { fileURLToPath } from "node:url";
import { PREFACE } from "../../agent/h2/constants.js";
import { H2Error } from "../../agent/h2/errors.js";
import { HpackDecoder } from "../../agent/h2/hpack.js";
import { H2Session } from "../../agent/h2/session.js";
import type { H2Stream } from "../../agent/h2/stream.js";
import type { Transport, TransportSink } from "../../agent/h2/transport.js";
import { createCsrPem, inspectCsr } from "../../agent/identity/csr.js";
import { IdentityError } from "../../agent/identity/errors.js";
import { generateRsaKeyPair } from "../../agent/identity/keys.js";
import { splitPemCertificates } from "../../agent/identity/pem.js";
import { parseAuthority } from "../../agent/proxy/authority.js";
import { frame } from "../unit/h2/support.js";

/** Inputs kept in the repo, one directory per target: findings, and seeds that reach deep paths. */
export const CORPUS = fileURLToPath(new URL("../../../test/fuzz/corpus/", import.meta.url));

export interface FuzzTarget {
  name: string;
  /** Resolves when the input was handled as the parser promises; rejects (or throws) with what went wrong. */
  run(data: Buffer): void | Promise<void>;
  /** Starting inputs, besides the saved corpus. */
  seeds(): Buffer[] | Promise<Buffer[]>;
  /** Byte strings mutations splice in: the format's keywords and magic values. */
  dictionary: Buffer[];
}

/** Thrown by a target when a parser broke its promise; the fuzzer saves the input. */
export class FuzzFinding extends Error {}

/** The lower side of a session that accepts every write and lends its reads, as the poll loop does. */
class NullTransport implements Transport {
  readonly lendsReads = true;
  writable = true;
  queuedBytes = 0;
  #sink: TransportSink | undefined;
  #destroyed = false;

  start(sink: TransportSink): void {
    this.#sink = sink;
  }

  write(): boolean {
    return true;
  }

  end(): void {
    this.writable = false;
  }

  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.writable = false;
    this.#sink?.closed();
  }
}

/**
 * The HTTP/2 server session fed the bytes after a valid preface, in reads whose size the first byte picks, each
 * read buffer scribbled over once handed in. A finding: an error escaping receive, or a session closed with
 * INTERNAL_ERROR (what the session makes of an error that is not an H2Error).
 */
const h2Session: FuzzTarget = {
  name: "h2-session",
  async run(data) {
    const session = new H2Session(new NullTransport(), { role: "server" });
    let internal: unknown;
    session.on("close", (err?: Error) => {
      if (err instanceof H2Error && err.code === "internal_error") internal = err.cause ?? err;
    });
    session.on("stream", (stream: H2Stream) => {
      stream.attach({
        headers: () => {},
        data: (c) => stream.consumed(c.length),
        end: () => stream.end(),
        reset: () => {},
        drain: () => {},
        close: () => {},
      });
      stream.respond(200);
      stream.write(Buffer.alloc(100, 1));
    });
    const read = 1 + (data[0] ?? 0) * 4;
    const bytes = Buffer.concat([PREFACE, data.subarray(1)]);
    const shared = Buffer.alloc(read);
    for (let pos = 0; pos < bytes.length; pos += read) {
      const n = bytes.copy(shared, 0, pos, pos + read);
      session.receive(shared.subarray(0, n));
      shared.fill(0xee);
      // The session writes once per microtask checkpoint; let it, as the poll loop does between reads.
      await Promise.resolve();
    }
    session.destroy();
    if (internal !== undefined) throw new FuzzFinding(`session closed with INTERNAL_ERROR: ${String(internal)}`);
  },
  seeds: () => {
    const settings = frame(4, 0, 0, Buffer.from([0, 4, 0, 1, 0, 0]));
    const headers = frame(1, 5, 1, Buffer.from("8286418a089d5c0b8170dc780f03", "hex"));
    return [
      Buffer.concat([Buffer.from([255]), settings, headers]),
      Buffer.concat([Buffer.from([0]), settings, frame(1, 4, 1, Buffer.from("02074f4e4e454354", "hex"))]),
      Buffer.concat([Buffer.from([3]), settings, headers, frame(0, 9, 1, Buffer.from("0268690000", "hex"))]),
      Buffer.concat([
        Buffer.from([7]),
        settings,
        frame(6, 0, 0, Buffer.alloc(8)),
        frame(8, 0, 0, Buffer.from([0, 0, 1, 0])),
      ]),
    ];
  },
  dictionary: [
    PREFACE,
    Buffer.from("000000040000000000", "hex"),
    Buffer.from("000000040100000000", "hex"),
    Buffer.from("000008060000000000", "hex"),
    Buffer.from("000004080000000000", "hex"),
    Buffer.from("000004030000000001", "hex"),
    Buffer.from("000008070000000000", "hex"),
    Buffer.from("000000090000000001", "hex"),
    Buffer.from("000000090400000001", "hex"),
    Buffer.from("000005020000000001", "hex"),
    Buffer.from("7fffffff", "hex"),
    Buffer.from("00ffffff", "hex"),
    Buffer.from(":method"),
    Buffer.from("CONNECT"),
  ],
};

/**
 * The HPACK decoder over a sequence of blocks, each a length byte then that many bytes; the first byte picks the
 * table size. A finding: an error other than an H2Error, or a field bigger than the table or the block allow.
 */
const hpack: FuzzTarget = {
  name: "hpack",
  run(data) {
    const limit = (data[0] ?? 0) * 32;
    const decoder = new HpackDecoder(limit);
    let pos = 1;
    while (pos < data.length) {
      const block = data.subarray(pos + 1, pos + 1 + (data[pos] as number));
      pos += 1 + block.length;
      let fields: [string, string][];
      try {
        fields = decoder.decode(block);
      } catch (err) {
        if (err instanceof H2Error && err.code === "compression_error") return;
        throw err;
      }
      for (const [name, value] of fields) {
        if (typeof name !== "string" || typeof value !== "string") throw new FuzzFinding("a field not of strings");
        if (name.length + value.length > Math.max(limit, Math.ceil((block.length * 8) / 5), 64)) {
          throw new FuzzFinding(`a ${name.length + value.length}-octet field from a ${block.length}-byte block`);
        }
      }
    }
  },
  seeds: () => [
    Buffer.from("8011828684418cf1e3c2e5f23a6ba0ab90f4ff0c828684be5886a8eb10649cbf", "hex"),
    Buffer.from("8007400161016200be", "hex"),
    Buffer.from("0003208182", "hex"),
  ],
  dictionary: [
    Buffer.from("3fe11f", "hex"),
    Buffer.from("ff80808000", "hex"),
    Buffer.from("be", "hex"),
    Buffer.from("7f00", "hex"),
    Buffer.from("40", "hex"),
    Buffer.from("ffffffff", "hex"),
    Buffer.from("f1e3c2e5f23a6ba0ab90f4ff", "hex"),
  ],
};

/**
 * `:authority` as a peer writes it (ambit reads no other CONNECT header). A finding: a throw, or an accepted
 * authority that is not an IP literal (bracketed exactly when IPv6, no zone) with a port 1-65535.
 */
const authority: FuzzTarget = {
  name: "authority",
  run(data) {
    const text = data.toString("utf8");
    const parsed = parseAuthority(text);
    if (parsed) {
      const family = isIP(parsed.ip);
      if (family === 0 || parsed.ip.includes("%") || text.startsWith("[") !== (family === 6)) {
        throw new FuzzFinding(`authority ${JSON.stringify(text)} accepted as ${parsed.ip}`);
      }
      if (!Number.isInteger(parsed.port) || parsed.port < 1 || parsed.port > 65535) {
        throw new FuzzFinding(`authority ${JSON.stringify(text)} accepted with port ${parsed.port}`);
      }
    }
  },
  seeds: () => ["10.0.0.1:80", "[fd00::1]:8080", "[::ffff:10.0.0.1]:1"].map((s) => Buffer.from(s)),
  dictionary: [
    "[",
    "]:",
    ":",
    "%",
    "%25",
    "::ffff:",
    "65535",
    "0",
    ",",
    ";",
    "=",
    " ",
    "\t",
    "__proto__",
    "%E0%A4%A",
  ].map((s) => Buffer.from(s)),
};

const URI = "spiffe://cluster.local/ns/default/sa/default";

/**
 * The CA's CSR check (DER inside a PEM block) and the PEM splitter. A finding: an error that is not an
 * IdentityError from inspectCsr, or a splitter that throws or returns what is not a certificate block.
 */
const csr: FuzzTarget = {
  name: "csr",
  run(data) {
    const pem = `-----BEGIN CERTIFICATE REQUEST-----\n${data.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`;
    try {
      inspectCsr(pem, URI);
    } catch (err) {
      if (!(err instanceof IdentityError)) throw err;
    }
    for (const block of splitPemCertificates(data.toString("latin1"))) {
      if (!block.startsWith("-----BEGIN CERTIFICATE-----") || !block.endsWith("-----END CERTIFICATE-----\n")) {
        throw new FuzzFinding("splitPemCertificates returned a block that is not a certificate");
      }
    }
  },
  seeds: async () => {
    const pem = createCsrPem(await generateRsaKeyPair(), URI);
    return [Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ""), "base64")];
  },
  dictionary: [
    Buffer.from("3082", "hex"),
    Buffer.from("300d06092a864886f70d01010b0500", "hex"),
    Buffer.from("06092a864886f70d010101", "hex"),
    Buffer.from("a000", "hex"),
    Buffer.from("-----BEGIN CERTIFICATE-----\n"),
    Buffer.from("-----END CERTIFICATE-----"),
  ],
};

export const TARGETS: readonly FuzzTarget[] = [h2Session, hpack, authority, csr];
