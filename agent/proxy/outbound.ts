/**
 * A pod's outbound listener (15001): every TCP connection the pod opens arrives here after REDIRECT. Meshed
 * destinations, direct or behind a Service ClusterIP, go over HBONE with the pod's own certificate (outbound-route.ts);
 * others pass through unchanged from the pod's namespace. If the pod has no valid certificate, a meshed connection is
 * reset: never sent in plaintext.
 */
import type { Socket } from "node:net";
import type { Logger } from "../log.js";
import { formatBaggage } from "./authority.js";
import { connectApp } from "./connect-app.js";
import type { ProxyContext } from "./context.js";
import { type ConnectionInfo, reportClose } from "./observer.js";
import { destinationOf } from "./original-destination.js";
import { routeOutbound } from "./outbound-route.js";
import { relay } from "./relay.js";
import { resetSocket } from "./reset.js";
import { relayStream } from "./stream-relay.js";
import type { LocalWorkload } from "./workload-index.js";

export function handleOutbound(
  ctx: ProxyContext,
  self: LocalWorkload,
  family: 4 | 6,
  client: Socket,
  log: Logger,
): void {
  client.setNoDelay(true);
  client.on("error", () => {});
  const dst = destinationOf(ctx, self, client, family, "outbound", log);
  if (!dst) return;
  const route = routeOutbound(dst, ctx.index(), ctx.services());
  if (route.kind === "refuse") {
    ctx.observer.connectionRefused(self.key, "outbound", route.reason);
    ctx.throttle.hit(`${self.key}|${route.service}|${route.reason}`, (suppressed) =>
      log.info(
        { service: route.service, destination: `${dst.address}:${dst.port}`, suppressed },
        "connection to a Service with no ready endpoint; reset",
      ),
    );
    resetSocket(client);
    return;
  }
  const target = route.kind === "hbone" ? route.target : undefined;
  const info: ConnectionInfo = {
    id: ctx.nextId(),
    reporter: "source",
    source: {
      workload: self.workload,
      namespace: self.pod.namespace,
      principal: target ? self.spiffe : "",
      ip: client.remoteAddress ?? "",
    },
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
  const done = reportClose(ctx.observer, info);

  if (route.kind === "passthrough") {
    connectApp(ctx, self, dst).then(
      (upstream) => {
        ctx.observer.connectionOpened(info);
        relay(client, upstream, done, resetSocket);
      },
      (err: NodeJS.ErrnoException) => {
        ctx.observer.connectionRefused(
          self.key,
          "outbound",
          err.code === "ECONNREFUSED" ? "upstream_refused" : "upstream_error",
        );
        resetSocket(client);
      },
    );
    return;
  }

  const context = ctx.certs.secureContext(self.id);
  if (!context) {
    log.warn(
      { destination: route.target.key },
      "no valid certificate for this pod; meshed connection reset (fail closed)",
    );
    ctx.observer.connectionRefused(self.key, "outbound", "no_identity");
    resetSocket(client);
    return;
  }
  const baggage = formatBaggage({ namespace: self.pod.namespace, workload: self.workload, pod: self.pod.name });
  ctx.pool.open({ workload: self, context }, route.target, route.address, route.port, [["baggage", baggage]]).then(
    (stream) => {
      ctx.observer.connectionOpened(info);
      // The app's first bytes go out with the CONNECT, without waiting for the answer; a refusal resets both.
      relayStream(client, stream, done, (headers) => {
        const status = headers.find(([name]) => name === ":status")?.[1];
        if (status !== "200") {
          ctx.observer.connectionRefused(self.key, "outbound", `hbone_status_${status}`);
          log.debug({ destination: route.target.key, status }, "HBONE CONNECT refused by the destination; reset");
          stream.reset();
          resetSocket(client);
        }
      });
    },
    (err: { code?: string }) => {
      log.warn({ err, destination: route.target.key }, "HBONE connection failed; app connection reset");
      ctx.observer.connectionRefused(self.key, "outbound", err.code ?? "hbone_error");
      resetSocket(client);
    },
  );
}
