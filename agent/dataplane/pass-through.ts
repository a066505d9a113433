import { constants } from "node:os";
import { type ConnectionInfo, reportClose } from "../proxy/observer.js";
import type { LocalWorkload } from "../proxy/workload-index.js";
import type { DataplaneContext } from "./context.js";
import { resetFd } from "./fd.js";
import { loggedSocketExhaustion } from "./fd-exhaustion.js";
import { type PodDial, whenConnected } from "./pod-socket.js";
import type { RelayedConnection, TcpRelay } from "./tcp-relay.js";

const ECONNREFUSED = constants.errno.ECONNREFUSED;

/** What passthrough needs: the worker's relay, and the connects still waiting (a stopping worker aborts them). */
export interface PassThroughDeps {
  ctx: DataplaneContext;
  relay: TcpRelay;
  /** Aborts each connect not decided yet: both sockets reset, nothing reported. */
  connecting: Set<() => void>;
}

/**
 * Plain TCP from the pod's namespace to `dst` (from `dst.source` when set), relayed byte for byte with `fd`
 * (outbound passthrough, and plaintext inbound delivered to the app). The connection counts as opened once the far end accepted it; a refused
 * or failed connect resets the client and is counted as refused instead. `track` hears of the relayed connection
 * once it runs and returns what to call when it ends (inbound: AuthorizedConnections).
 */
export function passThrough(
  deps: PassThroughDeps,
  self: LocalWorkload,
  direction: "outbound" | "inbound",
  fd: number,
  dst: PodDial,
  info: ConnectionInfo,
  track?: (relayed: RelayedConnection) => () => void,
): void {
  const { ctx, relay, connecting } = deps;
  let upstream: { fd: number; started: number };
  try {
    upstream = ctx.sockets(self.netns, dst);
  } catch (err) {
    loggedSocketExhaustion(ctx, err);
    ctx.observer.connectionRefused(self.key, direction, "upstream_error");
    resetFd(fd);
    return;
  }
  const waiting = whenConnected(ctx.reactor, upstream.fd, upstream.started, ctx.tuning.handshakeTimeoutMs, (errno) => {
    connecting.delete(abort);
    if (errno !== 0) {
      ctx.observer.connectionRefused(
        self.key,
        direction,
        errno === ECONNREFUSED ? "upstream_refused" : "upstream_error",
      );
      resetFd(upstream.fd);
      resetFd(fd);
      return;
    }
    ctx.observer.connectionOpened(info);
    const done = reportClose(ctx.observer, info);
    let untrack: (() => void) | undefined;
    const relayed = relay.relayTo(fd, upstream.fd, 0, (r) => {
      untrack?.();
      done({ aToB: r.toUpstream, bToA: r.toClient, ...(r.error ? { error: new Error(r.error) } : {}) });
    });
    if (track) untrack = track(relayed);
  });
  const abort = () => {
    waiting.cancel();
    resetFd(upstream.fd);
    resetFd(fd);
  };
  connecting.add(abort);
}
