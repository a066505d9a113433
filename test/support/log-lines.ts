import { Writable } from "node:stream";
import pino from "pino";
import type { Logger } from "../../agent/log.js";

/** A real pino logger whose JSON lines land in `lines`, for tests that assert what was logged. */
export function capturingLogger(level = "debug"): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n")) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: pino({ level }, sink), lines };
}
