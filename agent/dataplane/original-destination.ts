import { originalDestination } from "../../native-bindings/sockets.js";
import type { LineLog } from "../log.js";
import { type OriginalDestination, refusedOwnDestination } from "../proxy/original-destination.js";
import type { LocalWorkload } from "../proxy/workload-index.js";
import type { DataplaneContext } from "./context.js";
import { resetFd } from "./fd.js";

/**
 * Where a redirected connection was going before REDIRECT rewrote it (SO_ORIGINAL_DST), or undefined after the
 * connection was reset and counted: no original destination, or one the proxy must never dial.
 */
export function destinationOfFd(
  ctx: DataplaneContext,
  self: LocalWorkload,
  fd: number,
  family: 4 | 6,
  direction: "outbound" | "inbound",
  peer: string,
  log: LineLog,
): OriginalDestination | undefined {
  let dst: OriginalDestination;
  try {
    dst = originalDestination(fd, family);
  } catch (err) {
    log.warn({ err }, `${direction} connection without an original destination; reset`);
    ctx.observer.connectionRefused(self.key, direction, "no_original_dst");
    resetFd(fd);
    return undefined;
  }
  if (refusedOwnDestination(ctx, self, dst, direction, peer, log)) {
    resetFd(fd);
    return undefined;
  }
  return dst;
}
