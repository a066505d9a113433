/**
 * Integrity check both ways: the client sends an 8-byte length L and a payload; the server answers with the SHA-256
 * of what it received (32 bytes) followed by L bytes of its own, all deterministic so the client can verify them.
 */
import { createHash } from "node:crypto";
import type net from "node:net";
import { dialFrom, serveIn } from "./sockets.js";

const CHUNK = 256 * 1024;

/** Deterministic bytes: fast to produce and to check at both ends. */
function pattern(offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) b[i] = (offset + i) % 251;
  return b;
}

async function writeAll(s: net.Socket, total: number, offset = 0): Promise<void> {
  for (let sent = 0; sent < total; sent += CHUNK) {
    const n = Math.min(CHUNK, total - sent);
    if (!s.write(pattern(offset + sent, n))) await new Promise((r) => s.once("drain", r));
  }
}

export function transferServer(netns: string, ip: string, port: number): net.Server {
  return serveIn(netns, ip, port, (s) => {
    s.on("error", () => {});
    const hash = createHash("sha256");
    let header = Buffer.alloc(0);
    let back = -1;
    s.on("data", (chunk: Buffer) => {
      if (back < 0) {
        header = Buffer.concat([header, chunk]);
        if (header.length < 8) return;
        back = Number(header.readBigUInt64BE(0));
        hash.update(header.subarray(8));
      } else hash.update(chunk);
    });
    s.on("end", () => {
      s.write(hash.digest());
      void writeAll(s, Math.max(back, 0), 7).then(() => s.end());
    });
  });
}

/** Uploads `total` bytes in 64 KiB steps spread over about `ms`; stops early if the connection is gone. */
async function writePaced(s: net.Socket, total: number, ms: number): Promise<void> {
  const step = 64 * 1024;
  const pause = ms / (total / step);
  for (let o = 0; o < total; o += step) {
    if (s.destroyed) return;
    if (!s.write(pattern(o, Math.min(step, total - o)))) await new Promise((r) => s.once("drain", r).once("close", r));
    await new Promise((r) => setTimeout(r, pause));
  }
}

/**
 * Send `up` bytes, ask for `down` bytes back; resolves when both directions verified. With `paceMs`, the upload is
 * spread over about that long: a transfer that outlives something happening meanwhile (an agent's handover).
 */
export async function transfer(
  netns: string,
  ip: string,
  port: number,
  up: number,
  down: number,
  paceMs?: number,
): Promise<void> {
  const s = await dialFrom(netns, ip, port);
  const expectedUp = createHash("sha256");
  for (let o = 0; o < up; o += CHUNK) expectedUp.update(pattern(o, Math.min(CHUNK, up - o)));
  const received = createHash("sha256");
  let got = 0;
  let digest = Buffer.alloc(0);
  const done = new Promise<void>((resolve, reject) => {
    s.on("data", (chunk: Buffer) => {
      if (digest.length < 32) {
        const need = 32 - digest.length;
        digest = Buffer.concat([digest, chunk.subarray(0, need)]);
        chunk = chunk.subarray(need);
      }
      got += chunk.length;
      received.update(chunk);
    });
    s.on("error", reject);
    s.on("end", () => {
      s.end();
      if (!digest.equals(expectedUp.digest())) return reject(new Error(`upload corrupted (${up} bytes)`));
      if (got !== down) return reject(new Error(`download: ${got} of ${down} bytes`));
      const want = createHash("sha256");
      for (let o = 0; o < down; o += CHUNK) want.update(pattern(7 + o, Math.min(CHUNK, down - o)));
      if (!received.digest().equals(want.digest())) return reject(new Error(`download corrupted (${down} bytes)`));
      resolve();
    });
  });
  // Settled even if the upload below throws: the error is the caller's, not an unhandled rejection.
  done.catch(() => {});
  try {
    const header = Buffer.alloc(8);
    header.writeBigUInt64BE(BigInt(down));
    s.write(header);
    if (paceMs === undefined) await writeAll(s, up);
    else await writePaced(s, up, paceMs);
    s.end();
    await done;
  } finally {
    s.destroy();
  }
}
