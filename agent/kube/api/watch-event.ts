import { KubeApiError } from "./errors.js";

/**
 * The watch stream's wire format: newline-delimited JSON `{"type": ..., "object": ...}`, one event per line, and
 * the `Status` objects the API server sends for failures (as an answer body, or as an ERROR event). Pure.
 */

/** What ambit reads of a Status: code, reason, message, details.retryAfterSeconds. */
export interface ApiStatus {
  code: number | undefined;
  reason: string;
  message: string;
  retryAfterSeconds: number | undefined;
}

export type WatchEvent =
  | { kind: "change"; type: "ADDED" | "MODIFIED" | "DELETED"; object: object; resourceVersion: string | undefined }
  | { kind: "bookmark"; resourceVersion: string | undefined }
  | { kind: "error"; status: ApiStatus }
  /** Not usable, but not a broken stream either: logged and skipped. */
  | { kind: "skip"; why: string };

const MAX_TEXT = 512; // of a Status message or reason kept for logs

function clip(v: unknown): string {
  return typeof v === "string" ? v.slice(0, MAX_TEXT) : "";
}

/** The Status in `value` (any JSON); fields that are missing or of the wrong type are left empty. */
export function parseStatus(value: unknown): ApiStatus {
  const s = (typeof value === "object" && value !== null ? value : {}) as Record<string, unknown>;
  const details = (typeof s.details === "object" && s.details !== null ? s.details : {}) as Record<string, unknown>;
  const code = Number.isInteger(s.code) ? (s.code as number) : undefined;
  const retry = details.retryAfterSeconds;
  return {
    code,
    reason: clip(s.reason),
    message: clip(s.message),
    retryAfterSeconds: Number.isInteger(retry) && (retry as number) >= 0 ? (retry as number) : undefined,
  };
}

function resourceVersionOf(object: Record<string, unknown>): string | undefined {
  const rv = (object.metadata as Record<string, unknown>).resourceVersion;
  return typeof rv === "string" && rv !== "" ? rv : undefined;
}

/**
 * One line of a watch stream. A line that is not a JSON object with a string `type` is garbage: the stream can no
 * longer be trusted and this throws (bad_response). An event without an object or without metadata is skipped;
 * an object of an unexpected shape otherwise is passed on as it is (the store validates).
 */
export function parseWatchLine(line: string): WatchEvent {
  let event: unknown;
  try {
    event = JSON.parse(line);
  } catch (cause) {
    throw new KubeApiError("bad_response", `watch stream line is not JSON: ${JSON.stringify(line.slice(0, 80))}`, {
      cause,
    });
  }
  if (typeof event !== "object" || event === null || Array.isArray(event)) {
    throw new KubeApiError("bad_response", `watch stream line is not an event object: ${line.slice(0, 80)}`);
  }
  const { type, object } = event as { type?: unknown; object?: unknown };
  if (typeof type !== "string") throw new KubeApiError("bad_response", "watch event without a type");
  if (type === "ERROR") return { kind: "error", status: parseStatus(object) };
  if (typeof object !== "object" || object === null || Array.isArray(object)) {
    return { kind: "skip", why: `${type.slice(0, 32)} event without an object` };
  }
  const o = object as Record<string, unknown>;
  if (typeof o.metadata !== "object" || o.metadata === null || Array.isArray(o.metadata)) {
    return { kind: "skip", why: `${type.slice(0, 32)} event whose object has no metadata` };
  }
  switch (type) {
    case "ADDED":
    case "MODIFIED":
    case "DELETED":
      return { kind: "change", type, object, resourceVersion: resourceVersionOf(o) };
    case "BOOKMARK":
      return { kind: "bookmark", resourceVersion: resourceVersionOf(o) };
    default:
      return { kind: "skip", why: `unknown event type ${JSON.stringify(type.slice(0, 32))}` };
  }
}

/**
 * Splits a byte stream into lines, never holding more than `maxLineBytes` of an unfinished line: a longer line
 * throws (bad_response) instead of growing the buffer without bound. Lines are decoded as UTF-8 whole, so a
 * character split across chunks is not mangled.
 */
export class LineSplitter {
  readonly #max: number;
  #parts: Buffer[] = [];
  #size = 0;

  constructor(maxLineBytes: number) {
    this.#max = maxLineBytes;
  }

  /** The lines `chunk` completes (empty lines dropped). */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, nl);
      this.#check(piece.length);
      const bytes = this.#parts.length > 0 ? Buffer.concat([...this.#parts, piece]) : piece;
      this.#parts = [];
      this.#size = 0;
      const line = bytes.toString("utf8").trim();
      if (line !== "") lines.push(line);
      start = nl + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.#check(rest.length);
      this.#parts.push(rest);
      this.#size += rest.length;
    }
    return lines;
  }

  #check(more: number): void {
    if (this.#size + more > this.#max) {
      throw new KubeApiError("bad_response", `watch stream line longer than ${this.#max} bytes`);
    }
  }
}
