/**
 * Flow-control and buffer settings of the HBONE path. HTTP/2's default 64 KiB stream window caps one stream at
 * window/RTT, far below what a veth can carry, so windows are large; the per-session memory cap is raised to match
 * or nghttp2 refuses new streams under load. Measured with `make bench` (see the closing note of the proxy issue).
 */
export interface HboneTuning {
  /** Per-stream receive window, bytes (SETTINGS_INITIAL_WINDOW_SIZE). */
  streamWindow: number;
  /** Connection-level receive window, bytes. */
  sessionWindow: number;
  maxConcurrentStreams: number;
  /** Largest DATA frame the peer may send us (SETTINGS_MAX_FRAME_SIZE); bigger frames mean fewer per-frame costs. */
  maxFrameSize: number;
  /** nghttp2's per-session memory cap, MiB. */
  maxSessionMemoryMiB: number;
  /** Seconds a TLS handshake may take before the connection is dropped (and counted as `timeout`). */
  handshakeTimeoutMs: number;
  /** SO_SNDBUF / SO_RCVBUF for sockets ambit opens; 0 leaves kernel autotuning on. */
  socketBuffer: number;
}

export const DEFAULT_TUNING: HboneTuning = {
  streamWindow: 4 * 1024 * 1024,
  sessionWindow: 32 * 1024 * 1024,
  maxConcurrentStreams: 65535,
  maxFrameSize: 1048576,
  maxSessionMemoryMiB: 256,
  handshakeTimeoutMs: 10_000,
  socketBuffer: 0,
};

export function h2Settings(t: HboneTuning) {
  return {
    initialWindowSize: t.streamWindow,
    maxConcurrentStreams: t.maxConcurrentStreams,
    maxFrameSize: t.maxFrameSize,
    enablePush: false,
  };
}
