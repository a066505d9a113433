/**
 * Server side of HBONE on a pod's port 15008. Each TCP connection is wrapped in TLS with the destination pod's own
 * certificate (its SecureContext, built once per certificate by the certificate manager), the client certificate
 * is required and validated, and only then does HTTP/2 start. Each CONNECT stream is connected to the app at the
 * requested `ip:port`, which must be one of this pod's IPs, from inside the pod's namespace with the proxy mark.
 */
import http2, { type ServerHttp2Stream } from "node:http2";
import type { Socket } from "node:net";
import tls from "node:tls";
import { connectInNetns } from "../../native-bindings/sockets.js";
import { formatSpiffeId } from "../identity/spiffe.js";
import { validateTlsPeer } from "../identity/validate.js";
import { canonicalIp } from "../kube/cluster-lookup.js";
import type { PodSpec } from "../kube/pod.js";
import type { Logger } from "../log.js";
import { parseAuthority, parseBaggage } from "./authority.js";
import type { ProxyContext } from "./context.js";
import { ProxyError } from "./errors.js";
import { type ConnectionInfo, reportClose } from "./observer.js";
import { relay } from "./relay.js";
import { resetDuplex } from "./reset.js";
import { h2Settings } from "./tuning.js";
import type { Workload } from "./workload-index.js";

const PEER = Symbol("ambit.peer");
const STARTED = Symbol("ambit.handshakeStarted");
type Authenticated = tls.TLSSocket & { [PEER]?: { spiffe: string; ip: string } };
type Timed = Socket & { [STARTED]?: bigint };

/**
 * One per enrolled pod: a TLS server whose handshakes present the pod's current certificate (chosen per
 * handshake, so rotation needs no restart) and require a client certificate. Only connections whose peer passes
 * validation are handed to the HTTP/2 server.
 */
export function createHboneServer(ctx: ProxyContext, self: Workload): tls.Server {
  const log = ctx.log.child({ pod: self.key, listener: "hbone" });
  const h2 = http2.createServer({ settings: h2Settings(ctx.tuning), maxSessionMemory: ctx.tuning.maxSessionMemoryMiB });
  h2.on("session", (session) => {
    ctx.sessions.add(session);
    session.once("close", () => ctx.sessions.delete(session));
    session.once("connect", () => session.setLocalWindowSize(ctx.tuning.sessionWindow));
    session.on("error", (err) => log.debug({ err }, "HBONE session error; its streams are reset"));
  });
  h2.on("stream", (stream, headers) => onStream(ctx, self, stream, headers, log));

  const server = tls.createServer({
    // Every client sends SNI ("hbone"); the callback hands out the SecureContext the certificate manager built once.
    SNICallback: (_name, done) => {
      const context = ctx.certs.secureContext(self.id);
      if (context) done(null, context);
      else done(new ProxyError("no_identity", `${self.key} has no valid certificate`));
    },
    requestCert: true,
    rejectUnauthorized: false,
    ALPNProtocols: ["h2"],
    handshakeTimeout: ctx.tuning.handshakeTimeoutMs,
    allowHalfOpen: true,
    pauseOnConnect: false,
  });
  server.on("connection", (raw: Timed) => {
    raw.setNoDelay(true);
    raw[STARTED] = process.hrtime.bigint();
  });
  // tls.Server wraps the accepted TCP socket; its handshake timeout destroys only the TLS layer, so the TCP socket
  // (`_parent`) is destroyed explicitly, and it also carries the handshake's start time.
  const tcpOf = (s: tls.TLSSocket) => (s as unknown as { _parent?: Timed })._parent;
  const seconds = (s: tls.TLSSocket) => {
    const started = tcpOf(s)?.[STARTED];
    return started === undefined ? 0 : Number(process.hrtime.bigint() - started) / 1e9;
  };
  server.on("tlsClientError", (err: NodeJS.ErrnoException, s) => {
    const reason =
      err.code === "ERR_TLS_HANDSHAKE_TIMEOUT" ? "timeout" : err instanceof ProxyError ? err.code : "tls_error";
    ctx.observer.handshake("server", reason, seconds(s));
    log.info(
      { reason, detail: err.message, peer: s.remoteAddress },
      "inbound HBONE handshake failed; connection closed",
    );
    s.destroy();
    tcpOf(s)?.destroy();
  });
  server.on("secureConnection", (secure: Authenticated) => {
    const fail = (reason: string, detail: string) => {
      ctx.observer.handshake("server", reason, seconds(secure));
      log.info({ reason, detail, peer: secure.remoteAddress }, "inbound HBONE peer refused; connection closed");
      secure.destroy();
    };
    const peer = validateTlsPeer(secure, {
      trustDomain: ctx.trustDomain,
      trustBundle: ctx.trustBundle(),
      peerRole: "client",
    });
    if (!peer.ok) return fail(peer.reason, peer.detail);
    if (secure.alpnProtocol !== "h2") return fail("bad_alpn", `ALPN ${String(secure.alpnProtocol)}`);
    ctx.observer.handshake("server", "ok", seconds(secure));
    secure[PEER] = { spiffe: formatSpiffeId(peer.id), ip: secure.remoteAddress ?? "" };
    secure.on("error", () => {});
    h2.emit("connection", secure);
  });
  server.on("close", () => h2.close());
  return server;
}

function refuse(stream: ServerHttp2Stream, status: number, ctx: ProxyContext, self: Workload, reason: string): void {
  ctx.observer.connectionRefused(self.key, "inbound", reason);
  if (!stream.headersSent && !stream.destroyed) stream.respond({ ":status": status }, { endStream: true });
  else stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
}

function onStream(
  ctx: ProxyContext,
  self: Workload,
  stream: ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  log: Logger,
): void {
  stream.on("error", () => {});
  if (headers[":method"] !== "CONNECT") {
    refuse(stream, 405, ctx, self, "not_connect");
    return;
  }
  const target = parseAuthority(headers[":authority"]);
  if (!target) {
    refuse(stream, 400, ctx, self, "bad_authority");
    return;
  }
  // The pod's listener only delivers to the pod itself; anything else would make it an open relay.
  const wanted = canonicalIp(target.ip);
  if (!self.pod.ips.some((ip) => canonicalIp(ip) === wanted)) {
    refuse(stream, 403, ctx, self, "wrong_destination");
    return;
  }

  const peer = (stream.session?.socket as Authenticated | undefined)?.[PEER];
  const baggage = parseBaggage(headers.baggage);
  const info: ConnectionInfo = {
    id: ctx.nextId(),
    reporter: "destination",
    source: {
      workload: baggage["k8s.workload.name"] ?? "unknown",
      namespace: baggage["k8s.namespace.name"] ?? "unknown",
      principal: peer?.spiffe ?? "",
      ip: peer?.ip ?? "",
    },
    destination: {
      workload: self.workload,
      namespace: self.pod.namespace,
      principal: self.spiffe,
      ip: target.ip,
      port: target.port,
    },
    tls: true,
    pod: self.key,
    startedAt: Date.now(),
  };
  connectApp(ctx, self.pod, target.ip, target.port).then(
    (app) => {
      if (stream.destroyed) {
        app.destroy();
        return;
      }
      stream.respond({ ":status": 200 });
      ctx.observer.connectionOpened(info);
      relay(stream, app, reportClose(ctx.observer, info), resetDuplex);
    },
    (err: NodeJS.ErrnoException) => {
      log.debug({ err, target }, "inbound HBONE stream: the app refused the connection; answered 503");
      refuse(stream, 503, ctx, self, err.code === "ECONNREFUSED" ? "upstream_refused" : "upstream_error");
    },
  );
}

/**
 * A connection from inside `pod`'s namespace to ip:port, marked so the pod's rules let it through. No Nagle: the
 * proxy forwards whatever it has as soon as it has it, and a held-back small segment would meet the peer's delayed
 * ACK (40 ms stalls on request/response traffic).
 */
export async function connectApp(ctx: ProxyContext, pod: PodSpec, ip: string, port: number) {
  const socket = await connectInNetns(pod.netns, {
    address: ip,
    port,
    mark: ctx.mark,
    ...(ctx.tuning.socketBuffer ? { sendBuffer: ctx.tuning.socketBuffer, receiveBuffer: ctx.tuning.socketBuffer } : {}),
  });
  socket.setNoDelay(true);
  return socket;
}
