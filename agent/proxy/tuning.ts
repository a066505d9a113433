/**
 * Flow-control and buffer settings of the HBONE path. HTTP/2's default 64 KiB stream window caps one stream at
 * window/RTT, far below what a veth can carry, so windows are large; large frames mean fewer per-frame costs.
 * Measured with `make bench` (see the closing note of the proxy issue).
 */
import type { LocalSettings } from "../h2/settings.js";

export interface HboneTuning {
  /** Per-stream receive window, bytes (SETTINGS_INITIAL_WINDOW_SIZE). */
  streamWindow: number;
  /**
   * Connection-level receive window, bytes. It reopens only as apps take the data, so it is also the most one
   * session can hold for apps that have not read yet: a peer's memory bound, whatever its number of streams.
   */
  sessionWindow: number;
  maxConcurrentStreams: number;
  /** Largest frame the peer may send us (SETTINGS_MAX_FRAME_SIZE). */
  maxFrameSize: number;
  /** Milliseconds a TLS handshake, then the peer's HTTP/2 preface, may take before the connection is dropped. */
  handshakeTimeoutMs: number;
  /**
   * Unfinished inbound handshakes one source address may hold per pod and worker; more are closed at once. A held
   * handshake counts against the pod's connection limit until it times out, so without this one address (any pod
   * that can reach 15008, meshed or not) could fill that limit and have the pod's HBONE traffic refused.
   */
  handshakesPerSource: number;
  /** SO_SNDBUF / SO_RCVBUF for sockets ambit opens; 0 leaves kernel autotuning on. */
  socketBuffer: number;
  /** An HBONE connection whose peer goes silent this long (keepalive, unacknowledged data) is dropped. */
  peerTimeoutMs: number;
  /** A pooled session with no stream for this long is closed; the next connection makes a new one. */
  poolIdleMs: number;
}

export const DEFAULT_TUNING: HboneTuning = {
  streamWindow: 4 * 1024 * 1024,
  sessionWindow: 32 * 1024 * 1024,
  maxConcurrentStreams: 65535,
  maxFrameSize: 1048576,
  handshakeTimeoutMs: 10_000,
  // An honest source holds one handshake per pooled session it is opening: one per worker of its agent and identity
  // it expects here, so a handful.
  handshakesPerSource: 256,
  socketBuffer: 0,
  peerTimeoutMs: 30_000,
  poolIdleMs: 120_000,
};

export function h2Settings(t: HboneTuning): Partial<LocalSettings> {
  return {
    streamWindow: t.streamWindow,
    connectionWindow: t.sessionWindow,
    maxConcurrentStreams: t.maxConcurrentStreams,
    maxFrameSize: t.maxFrameSize,
  };
}
