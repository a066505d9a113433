import { DEFAULT_HEADER_TABLE_SIZE, DEFAULT_MAX_FRAME_SIZE, DEFAULT_WINDOW, Setting } from "./constants.js";

/** What this end of a session advertises and enforces. */
export interface LocalSettings {
  /** SETTINGS_INITIAL_WINDOW_SIZE: per-stream receive window. */
  streamWindow: number;
  /** Connection-level receive window (raised from 65535 by a WINDOW_UPDATE right after the preface). */
  connectionWindow: number;
  maxConcurrentStreams: number;
  /** SETTINGS_MAX_FRAME_SIZE: the largest frame the peer may send us. */
  maxFrameSize: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE, also the cap on one header block as received. */
  maxHeaderListSize: number;
}

export const DEFAULT_LOCAL_SETTINGS: LocalSettings = {
  streamWindow: DEFAULT_WINDOW,
  connectionWindow: DEFAULT_WINDOW,
  maxConcurrentStreams: 100,
  maxFrameSize: DEFAULT_MAX_FRAME_SIZE,
  maxHeaderListSize: 16 * 1024,
};

/** The SETTINGS frame payload for `s` (push is always disabled: HBONE never pushes). */
export function encodeSettings(s: LocalSettings): Buffer {
  const entries: [number, number][] = [
    [Setting.HEADER_TABLE_SIZE, DEFAULT_HEADER_TABLE_SIZE],
    [Setting.ENABLE_PUSH, 0],
    [Setting.MAX_CONCURRENT_STREAMS, s.maxConcurrentStreams],
    [Setting.INITIAL_WINDOW_SIZE, s.streamWindow],
    [Setting.MAX_FRAME_SIZE, s.maxFrameSize],
    [Setting.MAX_HEADER_LIST_SIZE, s.maxHeaderListSize],
  ];
  const out = Buffer.alloc(entries.length * 6);
  for (const [i, [id, value]] of entries.entries()) {
    out.writeUInt16BE(id, i * 6);
    out.writeUInt32BE(value, i * 6 + 2);
  }
  return out;
}
