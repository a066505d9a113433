import type { Socket } from "node:net";
import { originalDestination, socketFd } from "../../native-bindings/sockets.js";
import { canonicalIp } from "../kube/ip.js";
import type { Logger } from "../log.js";
import type { ProxyContext } from "./context.js";
import { ownDestination } from "./own-destination.js";
import { resetSocket } from "./reset.js";
import type { LocalWorkload } from "./workload-index.js";

export interface OriginalDestination {
  address: string;
  port: number;
  /** Interface index of an IPv6 link-local destination, which cannot be dialled without it. */
  scopeId?: number;
}

/**
 * Where a redirected connection was going before REDIRECT rewrote it. Without it the proxy cannot know where to
 * send the bytes, so the connection is reset (and counted) rather than guessed at; undefined then. So is a
 * destination the proxy must never dial (own-destination.ts): the agent's own listeners or loopback.
 */
export function destinationOf(
  ctx: ProxyContext,
  self: LocalWorkload,
  client: Socket,
  family: 4 | 6,
  direction: "outbound" | "inbound",
  log: Logger,
): OriginalDestination | undefined {
  let dst: OriginalDestination;
  try {
    const fd = socketFd(client);
    if (fd === undefined) throw new Error("accepted socket has no descriptor");
    dst = originalDestination(fd, family);
  } catch (err) {
    log.warn({ err }, `${direction} connection without an original destination; reset`);
    ctx.observer.connectionRefused(self.key, direction, "no_original_dst");
    resetSocket(client);
    return undefined;
  }
  if (refusedOwnDestination(ctx, self, dst, direction, client.remoteAddress, log)) {
    resetSocket(client);
    return undefined;
  }
  return dst;
}

/**
 * A destination the proxy must never dial (own-destination.ts): counted and logged (throttled), true; the caller
 * resets the connection. Shared by both data paths.
 */
export function refusedOwnDestination(
  ctx: Pick<ProxyContext, "observer" | "throttle">,
  self: LocalWorkload,
  dst: OriginalDestination,
  direction: "outbound" | "inbound",
  peer: string | undefined,
  log: Logger,
): boolean {
  const wanted = canonicalIp(dst.address);
  const local = direction === "inbound" || self.pod.ips.some((ip) => canonicalIp(ip) === wanted);
  const own = ownDestination(dst, local);
  if (!own) return false;
  ctx.observer.connectionRefused(self.key, direction, own);
  ctx.throttle.hit(`${self.key}|${direction}|${own}`, (suppressed) =>
    log.warn(
      { reason: own, destination: `${dst.address}:${dst.port}`, peer, suppressed },
      `${direction} connection to the agent's own listener or loopback (not redirected); reset, never dialled`,
    ),
  );
  return true;
}
