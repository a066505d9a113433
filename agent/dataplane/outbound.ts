/**
 * A pod's outbound listener (15001) on a worker: every TCP connection the pod opens arrives here after REDIRECT.
 * Meshed destinations, direct or behind a Service ClusterIP, go over HBONE with the pod's own certificate
 * (the decision is agent/proxy/outbound-route.ts's); others pass through unchanged from the pod's
 * namespace. If the pod has no valid certificate, a meshed connection is reset: never sent in plaintext.
 */
import { IPPROTO_TCP, setIntOption, TCP_NODELAY } from "../../native-bindings/io.js";
import type { HeaderList } from "../h2/hpack.js";
import type { LineLog } from "../log.js";
import { formatBaggage, formatForwarded } from "../proxy/authority.js";
import { type ConnectionInfo, reportClose } from "../proxy/observer.js";
import type { OriginalDestination } from "../proxy/original-destination.js";
import { routeOutbound } from "../proxy/outbound-route.js";
import { hboneFailureReason, hboneStatusReason } from "../proxy/reasons.js";
import type { LocalWorkload } from "../proxy/workload-index.js";
import { peerAddress, resetFd } from "./fd.js";
import { loggedSocketExhaustion } from "./fd-exhaustion.js";
import type { HbonePool } from "./hbone-pool.js";
import { destinationOfFd } from "./original-destination.js";
import { type PassThroughDeps, passThrough } from "./pass-through.js";
import { relayFdStream } from "./stream-relay.js";

export interface OutboundDeps extends PassThroughDeps {
  pool: HbonePool;
}

export function handleOutbound(deps: OutboundDeps, self: LocalWorkload, family: 4 | 6, fd: number, log: LineLog): void {
  const peer = peerAddress(fd);
  const dst = destinationOfFd(deps.ctx, self, fd, family, "outbound", peer, log);
  if (!dst) return;
  relayOutbound(deps, self, fd, peer, dst, log);
}

/**
 * An outbound connection from `peer` (the app's address) whose original destination is `dst`: routed, then relayed
 * over HBONE, passed through or refused. Separate from handleOutbound so that tests, which have no REDIRECT to
 * give `fd` an original destination, can start here.
 */
export function relayOutbound(
  deps: OutboundDeps,
  self: LocalWorkload,
  fd: number,
  peer: string,
  dst: OriginalDestination,
  log: LineLog,
): void {
  const { ctx, pool } = deps;
  const route = routeOutbound(dst, ctx.index(), ctx.services());
  if (route.kind === "refuse") {
    ctx.observer.connectionRefused(self.key, "outbound", route.reason);
    ctx.throttle.hit(`${self.key}|${route.service}|${route.reason}`, (suppressed) =>
      log.info(
        { service: route.service, destination: `${dst.address}:${dst.port}`, suppressed },
        "connection to a Service with no ready endpoint; reset",
      ),
    );
    resetFd(fd);
    return;
  }
  const target = route.kind === "hbone" ? route.target : undefined;
  const info: ConnectionInfo = {
    id: ctx.nextId(),
    reporter: "source",
    source: { workload: self.workload, namespace: self.pod.namespace, principal: target ? self.spiffe : "", ip: peer },
    destination: {
      workload: target?.workload ?? "unknown",
      namespace: target?.pod.namespace ?? "unknown",
      principal: target?.spiffe ?? "",
      ip: route.kind === "hbone" ? route.address : dst.address,
      port: route.kind === "hbone" ? route.port : dst.port,
    },
    tls: target !== undefined,
    pod: self.key,
    startedAt: Date.now(),
  };

  if (route.kind === "passthrough") {
    passThrough(deps, self, "outbound", fd, dst, info);
    return;
  }

  if (!ctx.tlsContext(self.spiffe)) {
    log.warn(
      { destination: route.target.key },
      "no valid certificate for this pod; meshed connection reset (fail closed)",
    );
    ctx.observer.connectionRefused(self.key, "outbound", "no_identity");
    resetFd(fd);
    return;
  }
  const baggage = formatBaggage({ namespace: self.pod.namespace, workload: self.workload, pod: self.pod.name });
  const forwarded = formatForwarded(peer);
  const headers: HeaderList = forwarded
    ? [
        ["forwarded", forwarded],
        ["baggage", baggage],
      ]
    : [["baggage", baggage]];
  pool.open(self, route.target, route.address, route.port, headers).then(
    (stream) => {
      ctx.observer.connectionOpened(info);
      // What the stream brings is written as it comes: a small write held back for an ACK (Nagle) would stall
      // request/response traffic on the app's delayed ACK.
      setIntOption(fd, IPPROTO_TCP, TCP_NODELAY, 1);
      // The app's first bytes go out with the CONNECT, without waiting for the answer (most likely they are waiting
      // already: read at once); a refusal resets both.
      const refused = (headers: HeaderList) => {
        const status = headers.find(([name]) => name === ":status")?.[1];
        if (status === "200") return;
        const reason = hboneStatusReason(status);
        ctx.observer.connectionRefused(self.key, "outbound", reason);
        // The status is whatever the destination wrote, up to the header list limit: enough of it to recognise.
        log.debug(
          { destination: route.target.key, reason, status: status?.slice(0, 16) },
          "HBONE CONNECT refused by the destination; reset",
        );
        // The relay closes the app's socket with a RST when its stream is reset.
        stream.reset();
      };
      relayFdStream(ctx.reactor, ctx.counters, fd, stream, reportClose(ctx.observer, info), refused, true);
    },
    (err: unknown) => {
      const reason = hboneFailureReason(err);
      ctx.observer.connectionRefused(self.key, "outbound", reason);
      // A line per source, destination and reason an interval, not per app connection: a destination that fails
      // every handshake (or a peer certificate that names whatever it likes, in the error's detail) would
      // otherwise write one for each connection the app tries.
      if (!loggedSocketExhaustion(ctx, err)) {
        ctx.throttle.hit(`${self.key}|${route.target.key}|${reason}`, (suppressed) =>
          log.warn(
            { err, destination: route.target.key, reason, suppressed },
            "HBONE connection failed; app connection reset",
          ),
        );
      }
      resetFd(fd);
    },
  );
}
