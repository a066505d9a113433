import type { Socket } from "node:net";
import { originalDestination, socketFd } from "../../native-bindings/sockets.js";
import type { Logger } from "../log.js";
import type { ProxyContext } from "./context.js";
import { resetSocket } from "./reset.js";
import type { Workload } from "./workload-index.js";

/**
 * Where a redirected connection was going before REDIRECT rewrote it. Without it the proxy cannot know where to
 * send the bytes, so the connection is reset (and counted) rather than guessed at; undefined then.
 */
export function destinationOf(
  ctx: ProxyContext,
  self: Workload,
  client: Socket,
  family: 4 | 6,
  direction: "outbound" | "inbound",
  log: Logger,
): { address: string; port: number } | undefined {
  try {
    const fd = socketFd(client);
    if (fd === undefined) throw new Error("accepted socket has no descriptor");
    return originalDestination(fd, family);
  } catch (err) {
    log.warn({ err }, `${direction} connection without an original destination; reset`);
    ctx.observer.connectionRefused(self.key, direction, "no_original_dst");
    resetSocket(client);
    return undefined;
  }
}
