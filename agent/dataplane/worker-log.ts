/**
 * A data-plane worker's logger: each call becomes one JSON line in pino's shape (`{"level":40,...fields,"msg":...}`,
 * no time or pid: the main thread's logger adds its own when it replays the line, event-batch.ts). Not pino itself:
 * pino and its dependencies cost every worker thread about 1 MB of heap (a bare worker's RssAnon with and without
 * it), and a worker needs only levels, child bindings and errors written out.
 */
import type { LineLog } from "../log.js";

/** pino's numeric levels: the line's `level` and the main thread's replay agree on them. */
export const LOG_LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 } as const;
type LevelName = keyof typeof LOG_LEVELS;

/** Nested causes written out at most this deep (a cause chain is peer-independent, but a loop must end). */
const MAX_CAUSE_DEPTH = 4;

/** A line leaves through `write`; `level` is its number. */
export type LineSink = (line: string, level: number) => void;

export function workerLog(level: string, write: LineSink): LineLog {
  const threshold = level === "silent" ? Number.POSITIVE_INFINITY : (LOG_LEVELS[level as LevelName] ?? LOG_LEVELS.info);
  return new WorkerLog(threshold, write, {});
}

class WorkerLog implements LineLog {
  readonly #threshold: number;
  readonly #write: LineSink;
  readonly #bindings: Record<string, unknown>;

  constructor(threshold: number, write: LineSink, bindings: Record<string, unknown>) {
    this.#threshold = threshold;
    this.#write = write;
    this.#bindings = bindings;
  }

  child(bindings: Record<string, unknown>): LineLog {
    return new WorkerLog(this.#threshold, this.#write, { ...this.#bindings, ...bindings });
  }

  fatal(fields: object, msg: string): void {
    this.#line(LOG_LEVELS.fatal, fields, msg);
  }

  error(fields: object, msg: string): void {
    this.#line(LOG_LEVELS.error, fields, msg);
  }

  warn(fields: object, msg: string): void {
    this.#line(LOG_LEVELS.warn, fields, msg);
  }

  info(fields: object, msg: string): void {
    this.#line(LOG_LEVELS.info, fields, msg);
  }

  debug(fields: object, msg: string): void {
    this.#line(LOG_LEVELS.debug, fields, msg);
  }

  #line(level: number, fields: object, msg: string): void {
    if (level < this.#threshold) return;
    const record = { level, ...this.#bindings, ...fields, msg };
    let line: string;
    try {
      line = JSON.stringify(record, replacer);
    } catch (err) {
      // A field that cannot be written (a cycle): the line still says what happened, without its fields.
      line = JSON.stringify({ level, ...this.#bindings, msg, logFieldsDropped: String(err) });
    }
    this.#write(line, level);
  }
}

/**
 * Errors as pino's serializer writes them (type, message, stack, own fields such as `code`, the cause); bigints as
 * text.
 */
function replacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return errorFields(value, 0);
  if (typeof value === "bigint") return value.toString();
  return value;
}

function errorFields(err: Error, depth: number): Record<string, unknown> {
  const fields: Record<string, unknown> = { type: err.constructor.name, message: err.message, stack: err.stack };
  for (const [k, v] of Object.entries(err)) if (k !== "cause") fields[k] = v;
  if (err.cause !== undefined) {
    fields.cause =
      err.cause instanceof Error && depth < MAX_CAUSE_DEPTH ? errorFields(err.cause, depth + 1) : String(err.cause);
  }
  return fields;
}
