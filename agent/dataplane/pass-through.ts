import { type ConnectionInfo, reportClose } from "../proxy/observer.js";
import type { OriginalDestination } from "../proxy/original-destination.js";
import type { LocalWorkload } from "../proxy/workload-index.js";
import type { DataplaneContext } from "./context.js";
import { resetFd } from "./fd.js";
import { whenConnected } from "./pod-socket.js";
import type { TcpRelay } from "./tcp-relay.js";

const ECONNREFUSED = 111;

/**
 * Plain TCP from the pod's namespace to `dst`, relayed byte for byte with `fd` (outbound passthrough, and
 * plaintext inbound delivered to the app). The connection counts as opened once the far end accepted it; a refused
 * or failed connect resets the client and is counted as refused instead, as on the Node path.
 */
export function passThrough(
  relay: TcpRelay,
  ctx: DataplaneContext,
  self: LocalWorkload,
  direction: "outbound" | "inbound",
  fd: number,
  dst: OriginalDestination,
  info: ConnectionInfo,
): void {
  let upstream: { fd: number; started: number };
  try {
    upstream = ctx.sockets(self.netns, dst);
  } catch {
    ctx.observer.connectionRefused(self.key, direction, "upstream_error");
    resetFd(fd);
    return;
  }
  whenConnected(ctx.reactor, upstream.fd, upstream.started, ctx.tuning.handshakeTimeoutMs, (errno) => {
    if (errno !== 0) {
      ctx.observer.connectionRefused(
        self.key,
        direction,
        errno === ECONNREFUSED ? "upstream_refused" : "upstream_error",
      );
      if (upstream.fd >= 0) resetFd(upstream.fd);
      resetFd(fd);
      return;
    }
    ctx.observer.connectionOpened(info);
    const done = reportClose(ctx.observer, info);
    relay.relayTo(fd, upstream.fd, 0, (r) =>
      done({ aToB: r.toUpstream, bToA: r.toClient, ...(r.error ? { error: new Error(r.error) } : {}) }),
    );
  });
}
