/**
 * The seam between an H2Session and the bytes under it. The session knows nothing of sockets: it writes batches of
 * buffers down and is handed bytes and events up. Over a Node socket, SocketTransport (socket-transport.ts) plays
 * the lower side; a poll loop over raw file descriptors (TLS done by the loop) plays it by calling the session's
 * TransportSink methods with its own read buffer.
 */

/** What a session needs from below. */
export interface Transport {
  /**
   * True when a buffer given to TransportSink.receive is valid only during that call (a poll loop reads every
   * connection into one buffer and reuses it as soon as receive returns). The session then copies what it keeps,
   * and stream data handlers are told to copy what they keep (H2Stream.lendsData). False when every buffer is the
   * receiver's to keep (a Node socket allocates one per read): DATA is then handed on without a copy.
   */
  readonly lendsReads: boolean;
  /** Output is still accepted (neither ended nor destroyed). */
  readonly writable: boolean;
  /** Bytes accepted by write and not yet taken by the kernel. */
  readonly queuedBytes: number;
  /** Start delivering to `sink`; the session calls this once, from its constructor. */
  start(sink: TransportSink): void;
  /**
   * Send `chunks` (`bytes` in all) in order, as one batch. They become the transport's, to hold until written.
   * The session calls this once per microtask checkpoint with what it queued since (sooner once 64 KiB wait), so a
   * driver that runs outside Node's callback scopes must let microtasks run after handing over its reads.
   * False: the peer side is backed up; the session holds back DATA (control frames still come) until the transport
   * calls sink.drained().
   */
  write(chunks: Buffer[], bytes: number): boolean;
  /** Half-close: send what is queued, then FIN (or TLS close_notify and FIN). */
  end(): void;
  /** Close now, dropping whatever the kernel has not taken; sink.closed() follows (at once or later). */
  destroy(): void;
}

/** What a session offers the transport: H2Session implements it, and the transport calls it. */
export interface TransportSink {
  /** Bytes from the peer, in order. With Transport.lendsReads, `buf` may be overwritten once this returns. */
  receive(buf: Buffer): void;
  /** write had returned false, and the transport can take more now. */
  drained(): void;
  /** The peer half-closed (FIN): HBONE has no use for a half-open connection, so the session closes. */
  ended(): void;
  /** The connection failed; closed() may follow. */
  errored(err: Error): void;
  /** The connection is gone. */
  closed(): void;
}
