/**
 * Admission of accepted connections against the connection limits (connection-limits.ts): what a pod's listener
 * does with each accepted socket before its handler (outbound.ts, inbound-plain.ts, inbound-hbone.ts) sees it.
 */
import type { LineLog } from "../log.js";
import type { ListenerKind } from "../redirect/enroller.js";
import type { DataplaneContext } from "./context.js";
import { resetFd } from "./fd.js";

/**
 * Wraps `handle` for pod `key`'s listener of `kind`: an accepted socket within the pod's and the agent's limits is
 * counted from now until it is closed, however its connection ends; one past a limit is reset at once (the client
 * sees ECONNRESET, nothing is dialled), counted in ambit_connections_refused_total{reason} and logged throttled.
 */
export function admitting(
  ctx: DataplaneContext,
  key: string,
  kind: ListenerKind,
  log: LineLog,
  handle: (fd: number) => void,
): (fd: number) => void {
  const direction = kind === "outbound" ? "outbound" : "inbound";
  return (fd) => {
    const limited = ctx.limits.admit(fd, key);
    if (limited === undefined) {
      handle(fd);
      return;
    }
    resetFd(fd);
    ctx.observer.connectionRefused(key, direction, limited);
    ctx.limits.logRefusal(ctx.throttle, log, key, kind, limited);
  };
}
