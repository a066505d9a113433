/**
 * An H2Session's transport over a Node duplex (the TLS socket of an HBONE connection). Every frame a session queues
 * in one turn of the event loop reaches this as one batch, written with at most one cork/uncork.
 */
import type { Duplex } from "node:stream";
import type { Transport, TransportSink } from "./transport.js";

/** Queued bytes at or above which DATA waits for the socket to drain (control frames never wait). */
export const SOCKET_HIGH_WATER = 1024 * 1024;
/** Batches up to this size are copied into one buffer; Node serves allocations this small from a shared pool. */
const SMALL_BATCH = 4096;

export class SocketTransport implements Transport {
  /** Node allocates a fresh buffer for every read: what a session is handed is its to keep. */
  readonly lendsReads = false;
  readonly #socket: Duplex;

  constructor(socket: Duplex) {
    this.#socket = socket;
  }

  get writable(): boolean {
    return !this.#socket.destroyed && this.#socket.writable;
  }

  get queuedBytes(): number {
    return this.#socket.writableLength;
  }

  start(sink: TransportSink): void {
    const socket = this.#socket;
    socket.on("data", (chunk: Buffer) => sink.receive(chunk));
    socket.on("drain", () => sink.drained());
    socket.on("end", () => sink.ended());
    socket.on("error", (err) => sink.errored(err));
    socket.on("close", () => sink.closed());
  }

  write(chunks: Buffer[], bytes: number): boolean {
    const socket = this.#socket;
    // Small batches are joined into one buffer (Node carves those from a shared pool). Large ones go out as one
    // writev instead: a large JS-side concatenation counts as external memory, and that brings V8's full
    // collections on far more often.
    if (chunks.length === 1) socket.write(chunks[0] as Buffer);
    else if (bytes <= SMALL_BATCH) socket.write(Buffer.concat(chunks, bytes));
    else {
      socket.cork();
      for (const b of chunks) socket.write(b);
      socket.uncork();
    }
    // Node's own highWaterMark (16 KiB) would stop DATA at every TLS record; the session's bound is this one.
    return socket.writableLength < SOCKET_HIGH_WATER;
  }

  end(): void {
    this.#socket.end();
  }

  destroy(): void {
    this.#socket.destroy();
  }
}
