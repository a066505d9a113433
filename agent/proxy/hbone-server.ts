/**
 * Server side of HBONE on a pod's port 15008. Each TCP connection is wrapped in TLS with the destination pod's own
 * certificate (its SecureContext, built once per certificate by the certificate manager), the client certificate
 * is required and validated, and only then does HTTP/2 start. Each CONNECT stream is connected to the app at the
 * requested `ip:port`, which must be one of this pod's IPs, from inside the pod's namespace with the proxy mark.
 */
import type { Socket } from "node:net";
import tls from "node:tls";
import { ErrorCode } from "../h2/constants.js";
import { H2Error } from "../h2/errors.js";
import type { HeaderList } from "../h2/hpack.js";
import { H2Session } from "../h2/session.js";
import { SocketTransport } from "../h2/socket-transport.js";
import type { H2Stream } from "../h2/stream.js";
import { headerRecord } from "../h2/validate-headers.js";
import { formatSpiffeId } from "../identity/spiffe.js";
import { MESH_TLS } from "../identity/tls-policy.js";
import { validateTlsPeer } from "../identity/validate.js";
import { canonicalIp } from "../kube/ip.js";
import type { Logger } from "../log.js";
import { parseAuthority, parseBaggage } from "./authority.js";
import { connectApp } from "./connect-app.js";
import type { ProxyContext } from "./context.js";
import { ProxyError } from "./errors.js";
import { type ConnectionInfo, reportClose } from "./observer.js";
import { ownDestination } from "./own-destination.js";
import { watchPeer } from "./peer-timeout.js";
import { relayStream } from "./stream-relay.js";
import { h2Settings } from "./tuning.js";
import type { LocalWorkload, Workload } from "./workload-index.js";

const STARTED = Symbol("ambit.handshakeStarted");
type Timed = Socket & { [STARTED]?: bigint };
interface PeerInfo {
  spiffe: string;
  ip: string;
}

/**
 * One per enrolled pod: a TLS server whose handshakes present the pod's current certificate (chosen per
 * handshake, so rotation needs no restart) and require a client certificate. Only connections whose peer passes
 * validation are handed to the HTTP/2 server.
 */
export function createHboneServer(ctx: ProxyContext, self: LocalWorkload): tls.Server {
  const log = ctx.log.child({ pod: self.key, listener: "hbone" });
  const mine = new Set<H2Session>();
  const server = tls.createServer({
    // SNICallback's context swaps in only the certificate; protocol and cipher order come from here.
    ...MESH_TLS,
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
    watchPeer(raw, ctx.tuning.peerTimeoutMs, log);
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
  server.on("secureConnection", (secure: tls.TLSSocket) => {
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
    const from: PeerInfo = { spiffe: formatSpiffeId(peer.id), ip: secure.remoteAddress ?? "" };
    const session = new H2Session(new SocketTransport(secure), {
      role: "server",
      settings: h2Settings(ctx.tuning),
      settingsTimeoutMs: ctx.tuning.handshakeTimeoutMs,
    });
    ctx.sessions.add(session);
    mine.add(session);
    session.once("close", (err?: Error) => {
      ctx.sessions.delete(session);
      mine.delete(session);
      if (err instanceof H2Error && err.h2code === ErrorCode.ENHANCE_YOUR_CALM) {
        log.warn(
          { err, peer: from.spiffe, ip: from.ip },
          "HBONE peer abused the session (ENHANCE_YOUR_CALM); session closed",
        );
      } else if (err) log.debug({ err, peer: from.ip }, "HBONE session ended by an error; its streams were reset");
    });
    session.on("stream", (stream: H2Stream, headers: HeaderList) => onStream(ctx, self, from, stream, headers, log));
  });
  // The pod is leaving the mesh: its sessions finish their streams and close.
  server.on("close", () => {
    for (const session of mine) session.close();
  });
  return server;
}

function refuse(stream: H2Stream, status: number, ctx: ProxyContext, self: Workload, reason: string): void {
  ctx.observer.connectionRefused(self.key, "inbound", reason);
  if (!stream.headersDone) stream.respond(status, true);
  else stream.reset(ErrorCode.REFUSED_STREAM);
}

function onStream(
  ctx: ProxyContext,
  self: LocalWorkload,
  peer: PeerInfo,
  stream: H2Stream,
  list: HeaderList,
  log: Logger,
): void {
  const headers = headerRecord(list);
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
  // Dialling one of the agent's own in-pod listeners would loop back into the agent (own-destination.ts).
  const own = ownDestination({ address: target.ip, port: target.port }, true);
  if (own) {
    refuse(stream, 403, ctx, self, own);
    ctx.throttle.hit(`${self.key}|hbone|${own}`, (suppressed) =>
      log.warn(
        { reason: own, target: headers[":authority"], peer: peer.spiffe, suppressed },
        "HBONE CONNECT to the agent's own listener refused (403); the stream is closed",
      ),
    );
    return;
  }

  const baggage = parseBaggage(headers.baggage);
  const info: ConnectionInfo = {
    id: ctx.nextId(),
    reporter: "destination",
    source: {
      workload: baggage["k8s.workload.name"] ?? "unknown",
      namespace: baggage["k8s.namespace.name"] ?? "unknown",
      principal: peer.spiffe,
      ip: peer.ip,
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
  connectApp(ctx, self, { address: target.ip, port: target.port }).then(
    (app) => {
      if (stream.closed) {
        app.destroy();
        return;
      }
      stream.respond(200);
      ctx.observer.connectionOpened(info);
      const done = reportClose(ctx.observer, info);
      // The relay counts app -> stream as aToB; the report counts from the source (the stream's peer).
      relayStream(app, stream, (r) => done({ ...r, aToB: r.bToA, bToA: r.aToB }));
    },
    (err: NodeJS.ErrnoException) => {
      log.debug({ err, target }, "inbound HBONE stream: the app refused the connection; answered 503");
      refuse(stream, 503, ctx, self, err.code === "ECONNREFUSED" ? "upstream_refused" : "upstream_error");
    },
  );
}
