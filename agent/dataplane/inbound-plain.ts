/**
 * A pod's plaintext inbound listener (15006) on a worker: TCP that reached the pod without HBONE. STRICT refuses
 * it (reset, counted); PERMISSIVE and DISABLE deliver it to the app at its original destination port, unless an
 * AuthorizationPolicy denies it (reset).
 */
import type { LineLog } from "../log.js";
import { connectionAttributes, denialOf } from "../policy/authorization.js";
import type { ConnectionInfo } from "../proxy/observer.js";
import type { LocalWorkload } from "../proxy/workload-index.js";
import { peerAddress, resetFd } from "./fd.js";
import { destinationOfFd } from "./original-destination.js";
import { type PassThroughDeps, passThrough } from "./pass-through.js";
import { appSource } from "./pod-socket.js";

export function handleInboundPlaintext(
  deps: PassThroughDeps,
  self: LocalWorkload,
  family: 4 | 6,
  fd: number,
  log: LineLog,
): void {
  const { ctx } = deps;
  const peer = peerAddress(fd);
  const dst = destinationOfFd(ctx, self, fd, family, "inbound", peer, log);
  if (!dst) return;
  // Per port: a workload PeerAuthentication's portLevelMtls may set another mode for this one.
  if (ctx.peerAuthentication(self, dst.port) === "STRICT") {
    ctx.observer.connectionRefused(self.key, "inbound", "plaintext_strict");
    ctx.throttle.hit(`${self.key}|plaintext_strict`, (suppressed) =>
      log.info({ peer, port: dst.port, suppressed }, "plaintext connection refused (PeerAuthentication STRICT); reset"),
    );
    resetFd(fd);
    return;
  }
  const source = ctx.index().lookup(peer);
  const attributes = connectionAttributes(undefined, peer, dst.address, dst.port);
  const decision = ctx.authorize(self, attributes);
  const info: ConnectionInfo = {
    id: ctx.nextId(),
    reporter: "destination",
    source: {
      workload: source?.workload ?? "unknown",
      namespace: source?.pod.namespace ?? "unknown",
      principal: "",
      ip: peer,
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
  if (decision.verdict === "deny") {
    // No principal on plaintext: only rules without identity conditions can allow it. Reset, as ztunnel does.
    ctx.observer.connectionDenied(info, denialOf(decision));
    resetFd(fd);
    return;
  }
  const from = appSource(peer, dst.address);
  const app = from ? { ...dst, source: from } : dst;
  passThrough(deps, self, "inbound", fd, app, info, (relayed) =>
    ctx.authorized.add(self, attributes, () => relayed.end(true, "AuthorizationPolicy revoked")),
  );
}
