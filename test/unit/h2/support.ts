import { createHash } from "node:crypto";
import net from "node:net";
import { FrameType } from "../../../agent/h2/constants.js";
import { H2Session, type SessionOptions } from "../../../agent/h2/session.js";
import type { H2Stream } from "../../../agent/h2/stream.js";

export const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** A loopback TCP server that runs an H2Session (server role) on every connection. */
export async function h2Server(
  onStream: (stream: H2Stream, headers: [string, string][], session: H2Session) => void,
  opts: Partial<SessionOptions> = {},
): Promise<{ port: number; sessions: H2Session[]; close(): Promise<void> }> {
  const sessions: H2Session[] = [];
  const server = net.createServer((sock) => {
    const session = new H2Session(sock, { role: "server", ...opts });
    sessions.push(session);
    session.on("stream", (stream: H2Stream, headers: [string, string][]) => onStream(stream, headers, session));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    sessions,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sessions) s.destroy();
        server.close(() => resolve());
      }),
  };
}

export async function h2Client(port: number, opts: Partial<SessionOptions> = {}): Promise<H2Session> {
  const sock = net.connect(port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => {
    sock.once("connect", resolve);
    sock.once("error", reject);
  });
  return new H2Session(sock, { role: "client", ...opts });
}

/** Collect a stream's data until END_STREAM (resolves) or reset (rejects); acknowledges data as it is read. */
export function collect(stream: H2Stream, onHeaders?: (h: [string, string][]) => void): Promise<Buffer> {
  const chunks: Buffer[] = [];
  return new Promise((resolve, reject) => {
    stream.attach({
      headers: (h) => onHeaders?.(h),
      data: (c) => {
        chunks.push(Buffer.from(c));
        stream.consumed(c.length);
      },
      end: () => resolve(Buffer.concat(chunks)),
      reset: (code) => reject(new Error(`reset ${code}`)),
      drain: () => drainHooks.get(stream)?.(),
      close: () => {},
    });
  });
}

/** Write all of `data` in 64 KiB pieces honouring back-pressure, then end. */
export function sendAll(stream: H2Stream, data: Buffer): Promise<void> {
  return new Promise((resolve) => {
    let pos = 0;
    const pump = () => {
      while (pos < data.length) {
        const piece = data.subarray(pos, pos + 65536);
        pos += piece.length;
        if (!stream.write(piece)) return;
      }
      stream.end();
      resolve();
    };
    drainHooks.set(stream, pump);
    pump();
  });
}

/** sendAll's resume hook; a test's handlers call it from drain(). */
export const drainHooks = new WeakMap<H2Stream, () => void>();

export const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** One raw HTTP/2 frame, for tests that play a misbehaving peer. */
export function frame(type: number, flags: number, id: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(id, 5);
  return Buffer.concat([h, payload]);
}

/** The error code of the GOAWAY a server on `port` answers `bytes` with, once it closes (-1: no GOAWAY). */
export async function goawayCodeAfter(port: number, bytes: Buffer): Promise<number> {
  const sock = net.connect(port, "127.0.0.1");
  // A server that lets the peer get away with it never closes: give up, and report no GOAWAY.
  sock.setTimeout(5000, () => sock.destroy());
  const chunks: Buffer[] = [];
  sock.on("data", (c: Buffer) => chunks.push(c));
  await new Promise<void>((resolve) => sock.once("connect", resolve));
  sock.write(bytes);
  await new Promise<void>((resolve) => sock.once("close", resolve));
  return goawayCodeIn(Buffer.concat(chunks));
}

/** The error code of the first GOAWAY among `bytes` (whole frames, as a peer sent them), or -1. */
export function goawayCodeIn(bytes: Buffer): number {
  for (let pos = 0; pos + 9 <= bytes.length; ) {
    const len = bytes.readUIntBE(pos, 3);
    if (bytes[pos + 3] === FrameType.GOAWAY) return bytes.readUInt32BE(pos + 9 + 4);
    pos += 9 + len;
  }
  return -1;
}

/** Answers a CONNECT with 200 and echoes its bytes (copied: a transport may lend its read buffer). */
export function echo(stream: H2Stream): void {
  stream.attach({
    data: (c) => {
      stream.write(Buffer.from(c));
      stream.consumed(c.length);
    },
    end: () => stream.end(),
    reset: () => {},
    drain: () => {},
    close: () => {},
  });
  stream.respond(200);
}
