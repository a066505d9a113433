import { Writable } from "node:stream";
import pino, { type Logger } from "pino";

export type { Logger };

/**
 * What code that may run in a data-plane worker logs through: pino's Logger is one, and so is the worker's own
 * (agent/dataplane/worker-log.ts), which keeps pino out of every worker thread.
 */
export interface LineLog {
  child(bindings: Record<string, unknown>): LineLog;
  fatal(fields: object, msg: string): void;
  error(fields: object, msg: string): void;
  warn(fields: object, msg: string): void;
  info(fields: object, msg: string): void;
  debug(fields: object, msg: string): void;
}

/**
 * The agent's root logger: JSON lines on stdout, written synchronously. Level from the option or AMBIT_LOG_LEVEL
 * (default info). A person at a terminal can ask for readable lines with AMBIT_LOG_PRETTY=1; pods and pipes always
 * get JSON.
 */
export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  const level = options.level ?? process.env.AMBIT_LOG_LEVEL ?? "info";
  const settings = {
    name: options.name ?? "ambit",
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  const pretty = process.env.AMBIT_LOG_PRETTY === "1" && process.stdout.isTTY;
  // Synchronous: a line is written before the call returns, so the last line of a process that ends with _exit
  // (exitProcessNow: a lost namespace, a lost worker) is never lost in a buffer or a write still in flight. The
  // cost is one write(2) per line on the main thread; the data plane's threads batch theirs (event-batch.ts).
  return pretty
    ? pino(settings, prettyStream(process.stdout))
    : pino(settings, pino.destination({ dest: 1, sync: true }));
}

/** `HH:MM:SS.mmm LEVEL msg key=value ...` from pino's JSON lines; nested values stay JSON. */
export function prettyLine(json: string): string {
  const { time, level, msg, pid: _pid, name: _name, ...rest } = JSON.parse(json) as Record<string, unknown>;
  const clock = typeof time === "string" ? time.slice(11, 23) : "";
  const fields = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
  return [clock, String(level).toUpperCase().padEnd(5), msg, ...fields].filter(Boolean).join(" ");
}

function prettyStream(out: NodeJS.WriteStream): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split("\n")) if (line) out.write(`${prettyLine(line)}\n`);
      done();
    },
  });
}

/** A logger that writes nothing, for tests and library use where the caller did not pass one. */
export const silentLogger: Logger = pino({ level: "silent" });
