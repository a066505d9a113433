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
import type { Workload } from "./workload-index.js";

export function handleInboundPlaintext(
  ctx: ProxyContext,
  self: Workload,
  family: 4 | 6,
  client: Socket,
  log: Logger,
): void {
  client.setNoDelay(true);
  client.on("error", () => {});
  const mode = ctx.peerAuthentication(self);
  if (mode === "STRICT") {
    ctx.observer.connectionRefused(self.key, "inbound", "plaintext_strict");
    log.info({ peer: client.remoteAddress }, "plaintext connection refused: PeerAuthentication STRICT");
    resetSocket(client);
    return;
  }
  const dst = destinationOf(ctx, self, client, family, "inbound", log);
  if (!dst) return;
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
  connectApp(ctx, self.pod, dst).then(
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
