/**
 * Running out of descriptors or socket memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) is the process's or the node's
 * state, not one connection's: every accept and socket() fails alike until some close. It is logged once per
 * throttle interval per worker and place (accept, socket), with the count of what was not logged, never once
 * per connection: a connection storm that exhausts descriptors would otherwise add a log line per attempt.
 */
import { errnoName, SyscallError } from "../../native-bindings/errors.js";
import { EMFILE, ENFILE, ENOBUFS, ENOMEM } from "../../native-bindings/io.js";
import type { LineLog } from "../log.js";
import type { LogThrottle } from "../log-throttle.js";

const EXHAUSTED = new Set([EMFILE, ENFILE, ENOBUFS, ENOMEM]);

export function isExhaustion(errno: number): boolean {
  return EXHAUSTED.has(errno);
}

/** The errno of a descriptor or memory shortage in `err` or its causes (a SyscallError), if that is what it is. */
function exhaustionOf(err: unknown): number | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    if (e instanceof SyscallError && isExhaustion(e.errno)) return e.errno;
  }
  return undefined;
}

/** Where the shortage hit, and what happens next, for the log line. */
const NEXT = {
  accept:
    "accept failed for lack of descriptors or memory; the listeners that hit it pause accepting briefly and retry, new connections wait in the backlog",
  socket: "no socket for a connection for lack of descriptors or memory; the connection is refused (reset or 503)",
} as const;

/** Logs a shortage at `where` at most once per throttle interval; the next line says how many were not logged. */
export function logExhaustion(throttle: LogThrottle, log: LineLog, where: keyof typeof NEXT, errno: number): void {
  const code = errnoName(errno);
  throttle.hit(`fd_exhausted|${where}|${code}`, (suppressed) => log.warn({ code, where, suppressed }, NEXT[where]));
}

/**
 * For a socket that could not be made for a connection: logs the shortage (logExhaustion, "socket") when that is
 * what `err` is, and says whether it was, so the caller logs any other failure its own way.
 */
export function loggedSocketExhaustion(ctx: { throttle: LogThrottle; log: LineLog }, err: unknown): boolean {
  const errno = exhaustionOf(err);
  if (errno === undefined) return false;
  logExhaustion(ctx.throttle, ctx.log, "socket", errno);
  return true;
}
