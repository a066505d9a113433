/**
 * A pod's plaintext inbound listener (15006): TCP that reached the pod without HBONE. STRICT refuses it (reset,
 * counted); PERMISSIVE and DISABLE deliver it to the app at its original destination port.
 */
import type { Socket } from "node:net";
import { originalDestination, socketFd } from "../../native-bindings/sockets.js";
import type { Logger } from "../log.js";
import type { ProxyContext } from "./context.js";
import { connectApp } from "./hbone-server.js";
import { type ConnectionInfo, reportClose } from "./observer.js";
import { relay } from "./relay.js";
import { resetDuplex } from "./reset.js";
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
    resetDuplex(client);
    return;
  }
  const fd = socketFd(client);
  let dst: { address: string; port: number };
  try {
    if (fd === undefined) throw new Error("accepted socket has no descriptor");
    dst = originalDestination(fd, family);
  } catch (err) {
    log.warn({ err }, "inbound connection without an original destination; reset");
    ctx.observer.connectionRefused(self.key, "inbound", "no_original_dst");
    resetDuplex(client);
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
  connectApp(ctx, self.pod, dst.address, dst.port).then(
    (app) => {
      ctx.observer.connectionOpened(info);
      relay(client, app, reportClose(ctx.observer, info), resetDuplex);
    },
    (err: NodeJS.ErrnoException) => {
      ctx.observer.connectionRefused(
        self.key,
        "inbound",
        err.code === "ECONNREFUSED" ? "upstream_refused" : "upstream_error",
      );
      resetDuplex(client);
    },
  );
}
