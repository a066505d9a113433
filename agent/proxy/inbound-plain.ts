/**
 * A pod's plaintext inbound listener (15006): TCP that reached the pod without HBONE. STRICT refuses it (reset,
 * counted); PERMISSIVE and DISABLE deliver it to the app at its original destination port.
 */
import type { Socket } from "node:net";
import type { Logger } from "../log.js";
import { connectApp } from "./connect-app.js";
import type { ProxyContext } from "./context.js";
import { type ConnectionInfo, reportClose } from "./observer.js";
import { destinationOf } from "./original-destination.js";
import { relay } from "./relay.js";
import { resetSocket } from "./reset.js";
import type { LocalWorkload } from "./workload-index.js";

export function handleInboundPlaintext(
  ctx: ProxyContext,
  self: LocalWorkload,
  family: 4 | 6,
  client: Socket,
  log: Logger,
): void {
  client.setNoDelay(true);
  client.on("error", () => {});
  const dst = destinationOf(ctx, self, client, family, "inbound", log);
  if (!dst) return;
  // Per port: a workload PeerAuthentication's portLevelMtls may set another mode for this one.
  if (ctx.peerAuthentication(self, dst.port) === "STRICT") {
    ctx.observer.connectionRefused(self.key, "inbound", "plaintext_strict");
    ctx.throttle.hit(`${self.key}|plaintext_strict`, (suppressed) =>
      log.info(
        { peer: client.remoteAddress, port: dst.port, suppressed },
        "plaintext connection refused (PeerAuthentication STRICT); reset",
      ),
    );
    resetSocket(client);
    return;
  }
  const source = ctx.index().lookup(client.remoteAddress ?? "");
  const info: ConnectionInfo = {
    id: ctx.nextId(),
    reporter: "destination",
    source: {
      workload: source?.workload ?? "unknown",
      namespace: source?.pod.namespace ?? "unknown",
      principal: "",
      ip: client.remoteAddress ?? "",
    },
    destination: {
      workload: self.workload,
      namespace: self.pod.namespace,
      principal: self.spiffe,
      ip: dst.address,
      port: dst.port,
    },
    tls: false,
    pod: self.key,
    startedAt: Date.now(),
  };
  connectApp(ctx, self, dst).then(
    (app) => {
      ctx.observer.connectionOpened(info);
      relay(client, app, reportClose(ctx.observer, info), resetSocket);
    },
    (err: NodeJS.ErrnoException) => {
      ctx.observer.connectionRefused(
        self.key,
        "inbound",
        err.code === "ECONNREFUSED" ? "upstream_refused" : "upstream_error",
      );
      resetSocket(client);
    },
  );
}
