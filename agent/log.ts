import pino, { type Logger } from "pino";

export type { Logger };

/**
 * The agent's root logger: JSON lines on stdout. Level from AMBIT_LOG_LEVEL (default info).
 * Pretty output is only used when a person asks for it (AMBIT_LOG_PRETTY=1 and a terminal), never in a pod.
 */
export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  const level = options.level ?? process.env.AMBIT_LOG_LEVEL ?? "info";
  return pino({
    name: options.name ?? "ambit",
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
}

/** A logger that writes nothing, for tests and library use where the caller did not pass one. */
export const silentLogger: Logger = pino({ level: "silent" });
