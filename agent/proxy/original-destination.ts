import { canonicalIp } from "../kube/ip.js";
import type { LineLog } from "../log.js";
import type { LogThrottle } from "../log-throttle.js";
import type { ProxyObserver } from "./observer.js";
import { ownDestination } from "./own-destination.js";
import type { LocalWorkload } from "./workload-index.js";

/** Where a redirected connection was going before REDIRECT rewrote it (SO_ORIGINAL_DST). */
export interface OriginalDestination {
  address: string;
  port: number;
  /** Interface index of an IPv6 link-local destination, which cannot be dialled without it. */
  scopeId?: number;
}

/**
 * A destination the proxy must never dial (own-destination.ts): counted and logged (throttled), true; the caller
 * resets the connection.
 */
export function refusedOwnDestination(
  ctx: { observer: ProxyObserver; throttle: LogThrottle },
  self: LocalWorkload,
  dst: OriginalDestination,
  direction: "outbound" | "inbound",
  peer: string | undefined,
  log: LineLog,
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
