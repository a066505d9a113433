import { createHash } from "node:crypto";
import net from "node:net";
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
