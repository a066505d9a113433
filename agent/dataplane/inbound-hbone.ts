/**
 * Server side of HBONE on a pod's port 15008, on a data-plane worker's Reactor. Each accepted connection is wrapped in
 * TLS with the pod's own certificate (this worker's TlsContext for it), the client certificate is required and
 * verified, the peer must pass the SPIFFE validation and have negotiated h2, and only then does HTTP/2 start. Each
 * CONNECT stream is connected to the app at the requested `ip:port`, which must be one of this pod's IPs, from inside
 * the pod's namespace (DataplaneContext.sockets), and relayed fd <-> stream, unless an AuthorizationPolicy denies
 * it (401).
 */
import { constants } from "node:os";
import { errnoName } from "../../native-bindings/errors.js";
import { ErrorCode } from "../h2/constants.js";
import { H2Error } from "../h2/errors.js";
import type { HeaderList } from "../h2/hpack.js";
import { H2Session } from "../h2/session.js";
import type { H2Stream } from "../h2/stream.js";
import { headerRecord } from "../h2/validate-headers.js";
import { formatSpiffeId, type SpiffeId } from "../identity/spiffe.js";
import { canonicalIp } from "../kube/ip.js";
import type { LineLog } from "../log.js";
import { connectionAttributes, denialOf } from "../policy/authorization.js";
import { parseAuthority } from "../proxy/authority.js";
import { type ConnectionInfo, type Peer, reportClose } from "../proxy/observer.js";
import { ownDestination } from "../proxy/own-destination.js";
import type { RefusalReason } from "../proxy/reasons.js";
import { h2Settings } from "../proxy/tuning.js";
import type { LocalWorkload } from "../proxy/workload-index.js";
import type { DataplaneContext } from "./context.js";
import { closeSocket, peerAddress } from "./fd.js";
import { loggedSocketExhaustion } from "./fd-exhaustion.js";
import { checkHbonePeer } from "./hbone-peer.js";
import { watchPeerFd } from "./peer-timeout.js";
import { appSource, whenConnected } from "./pod-socket.js";
import { relayFdStream } from "./stream-relay.js";
import { handshakeFailure } from "./tls/errors.js";
import { TlsTransport } from "./tls-transport.js";

const ECONNREFUSED = constants.errno.ECONNREFUSED;

/**
 * Time between the GOAWAY notice and the final GOAWAY (see H2Session.closeSoon): at least a round trip, so every
 * stream the peer sent before it read the notice has arrived. Go's HTTP/2 server waits 1 s too; peers of one cluster
 * are well under that apart, and a stream that still comes later is refused, which the peer's app sees as a reset.
 */
export const GOAWAY_NOTICE_MS = 1000;

interface PeerInfo {
  id: SpiffeId;
  spiffe: string;
  ip: string;
}

/** "closed": the pod left the mesh (sessions finish their streams); "destroyed": the worker is stopping. */
type State = "open" | "closed" | "destroyed";

/**
 * One per enrolled pod per worker. The worker's listener for the pod's port 15008 hands it each accepted fd. The
 * pod's current TlsContext is asked for per connection, so a rotated certificate serves the next handshake.
 *
 * Owner: from accept() on, every fd is owned by exactly one thing, and this server can reach each of them: a
 * connection in its handshake by its TlsTransport (#handshaking), a session's connection by its H2Session
 * (#sessions), an app socket being connected by #connecting, an app socket being relayed by its relay (which a
 * session's destroy() resets through the stream). destroy() releases all of them.
 */
export class HboneServer {
  readonly #ctx: DataplaneContext;
  readonly #self: LocalWorkload;
  readonly #log: LineLog;
  readonly #handshaking = new Set<TlsTransport>();
  /** Unfinished handshakes by source address (tuning.handshakesPerSource). */
  readonly #handshakesFrom = new Map<string, number>();
  readonly #sessions = new Set<H2Session>();
  /** App sockets whose connect is under way, by fd: destroy() cancels the wait and closes them. */
  readonly #connecting = new Map<number, { cancel(): void }>();
  #state: State = "open";
  #closed: Promise<void> = Promise.resolve();
  #noticeTimer: NodeJS.Timeout | undefined;
  #noticeDone: (() => void) | undefined;

  constructor(ctx: DataplaneContext, self: LocalWorkload) {
    this.#ctx = ctx;
    this.#self = self;
    this.#log = ctx.log.child({ pod: self.key, listener: "hbone" });
  }

  /** Connections in their handshake, sessions, and app connects under way (relays live inside sessions). */
  get live(): number {
    return this.#handshaking.size + this.#sessions.size + this.#connecting.size;
  }

  /** Takes ownership of an accepted, non-blocking TCP fd and serves HBONE on it. */
  accept(fd: number): void {
    if (this.#state !== "open") {
      closeSocket(fd);
      return;
    }
    const started = process.hrtime.bigint();
    const peer = peerAddress(fd);
    const context = this.#ctx.tlsContext(this.#self.spiffe);
    if (!context) {
      closeSocket(fd);
      this.#ctx.observer.handshake("server", "no_identity", 0);
      this.#log.info(
        { reason: "no_identity", detail: `${this.#self.key} has no valid certificate`, peer },
        "inbound HBONE handshake failed; connection closed",
      );
      return;
    }
    const held = this.#handshakesFrom.get(peer) ?? 0;
    if (held >= this.#ctx.tuning.handshakesPerSource) {
      closeSocket(fd);
      this.#ctx.observer.handshake("server", "source_limit", 0);
      this.#ctx.throttle.hit(`${this.#self.key}|handshake|source_limit`, (suppressed) =>
        this.#log.warn(
          { reason: "source_limit", peer, held, suppressed },
          "inbound HBONE connection closed: its source address holds too many unfinished handshakes",
        ),
      );
      return;
    }
    this.#handshakesFrom.set(peer, held + 1);
    const settled = () => {
      const left = (this.#handshakesFrom.get(peer) ?? 1) - 1;
      if (left > 0) this.#handshakesFrom.set(peer, left);
      else this.#handshakesFrom.delete(peer);
    };
    watchPeerFd(fd, this.#ctx.tuning.peerTimeoutMs, this.#log);
    let transport: TlsTransport | undefined;
    TlsTransport.open({
      reactor: this.#ctx.reactor,
      context,
      fd,
      role: "server",
      handshakeTimeoutMs: this.#ctx.tuning.handshakeTimeoutMs,
      onStart: (t) => {
        transport = t;
        this.#handshaking.add(t);
      },
    }).then(
      (t) => {
        settled();
        this.#handshaking.delete(t);
        this.#secured(t, peer, started);
      },
      (err: Error) => {
        settled();
        if (transport) this.#handshaking.delete(transport);
        // Dropped by close() or destroy(): not the peer's failure.
        if (this.#state !== "open") return;
        const reason = handshakeFailure(err);
        this.#ctx.observer.handshake("server", reason, secondsSince(started));
        // Anyone who can reach 15008 can fail handshakes at will: a line per pod and reason an interval.
        this.#ctx.throttle.hit(`${this.#self.key}|handshake|${reason}`, (suppressed) =>
          this.#log.info(
            { reason, detail: err.message, peer, suppressed },
            "inbound HBONE handshake failed; connection closed",
          ),
        );
      },
    );
  }

  /**
   * The pod is leaving the mesh, or the agent is draining: no new connection; sessions are told at once to open no
   * new stream (closeSoon), and GOAWAY_NOTICE_MS later get the final GOAWAY, finish the streams they carry and
   * close. Resolves then: streams that crossed the notice were served, so the pod's namespace is no longer needed
   * for a new one. Connections still in their handshake are dropped: nothing runs on them yet, and a session made
   * now would only be told to go away.
   */
  close(): Promise<void> {
    if (this.#state !== "open") return this.#closed;
    this.#state = "closed";
    for (const t of [...this.#handshaking]) t.destroy();
    for (const session of this.#sessions) session.closeSoon();
    this.#closed = new Promise((resolve) => {
      this.#noticeTimer = setTimeout(() => {
        this.#noticeTimer = undefined;
        for (const session of [...this.#sessions]) session.close();
        resolve();
      }, GOAWAY_NOTICE_MS);
      this.#noticeDone = resolve;
    });
    return this.#closed;
  }

  /** The worker is stopping: every connection, stream and app socket is reset and its fd closed now. */
  destroy(): void {
    if (this.#state === "destroyed") return;
    this.#state = "destroyed";
    clearTimeout(this.#noticeTimer);
    this.#noticeDone?.();
    for (const t of [...this.#handshaking]) t.destroy();
    for (const [fd, wait] of this.#connecting) {
      wait.cancel();
      closeSocket(fd);
    }
    this.#connecting.clear();
    for (const session of [...this.#sessions]) session.destroy();
  }

  #secured(transport: TlsTransport, peer: string, started: bigint): void {
    if (this.#state !== "open") {
      transport.destroy();
      return;
    }
    const check = checkHbonePeer(transport.peer, transport.alpn);
    if (!check.ok) {
      this.#ctx.observer.handshake("server", check.reason, secondsSince(started));
      this.#ctx.throttle.hit(`${this.#self.key}|peer|${check.reason}`, (suppressed) =>
        this.#log.info(
          { reason: check.reason, detail: check.detail, peer, suppressed },
          "inbound HBONE peer refused; connection closed",
        ),
      );
      transport.destroy();
      return;
    }
    this.#ctx.observer.handshake("server", "ok", secondsSince(started));
    const from: PeerInfo = { id: check.id, spiffe: formatSpiffeId(check.id), ip: peer };
    const session = new H2Session(transport, {
      role: "server",
      settings: h2Settings(this.#ctx.tuning),
      settingsTimeoutMs: this.#ctx.tuning.handshakeTimeoutMs,
    });
    this.#sessions.add(session);
    session.once("close", (err?: Error) => {
      this.#sessions.delete(session);
      if (err instanceof H2Error && err.h2code === ErrorCode.ENHANCE_YOUR_CALM) {
        this.#log.warn(
          { err, peer: from.spiffe, ip: from.ip },
          "HBONE peer abused the session (ENHANCE_YOUR_CALM); session closed",
        );
      } else if (err)
        this.#log.debug({ err, peer: from.ip }, "HBONE session ended by an error; its streams were reset");
    });
    session.on("stream", (stream: H2Stream, headers: HeaderList) => this.#onStream(from, stream, headers));
  }

  #refuse(stream: H2Stream, status: number, reason: RefusalReason): void {
    this.#ctx.observer.connectionRefused(this.#self.key, "inbound", reason);
    answerRefused(stream, status);
  }

  #onStream(peer: PeerInfo, stream: H2Stream, list: HeaderList): void {
    const ctx = this.#ctx;
    const self = this.#self;
    const headers = headerRecord(list);
    if (headers[":method"] !== "CONNECT") {
      this.#refuse(stream, 405, "not_connect");
      return;
    }
    const target = parseAuthority(headers[":authority"]);
    if (!target) {
      this.#refuse(stream, 400, "bad_authority");
      return;
    }
    // The pod's listener only delivers to the pod itself; anything else would make it an open relay.
    const wanted = canonicalIp(target.ip);
    if (!self.pod.ips.some((ip) => canonicalIp(ip) === wanted)) {
      this.#refuse(stream, 403, "wrong_destination");
      return;
    }
    // Dialling one of the agent's own in-pod listeners would loop back into the agent (own-destination.ts).
    const own = ownDestination({ address: target.ip, port: target.port }, true);
    if (own) {
      this.#refuse(stream, 403, own);
      ctx.throttle.hit(`${self.key}|hbone|${own}`, (suppressed) =>
        this.#log.warn(
          { reason: own, target: headers[":authority"], peer: peer.spiffe, suppressed },
          "HBONE CONNECT to the agent's own listener refused (403); the stream is closed",
        ),
      );
      return;
    }

    const info: ConnectionInfo = {
      id: ctx.nextId(),
      reporter: "destination",
      source: sourceOf(ctx, peer),
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
    const attributes = connectionAttributes(peer.id, peer.ip, target.ip, target.port);
    const decision = ctx.authorize(self, attributes);
    if (decision.verdict === "deny") {
      // ztunnel's answer to a denied CONNECT; the app never sees a connection.
      ctx.observer.connectionDenied(info, denialOf(decision));
      answerRefused(stream, 401);
      return;
    }
    // A stream is a connection to the pod as much as the session carrying it is: a peer must not get past the
    // pod's limit by multiplexing.
    const limited = ctx.limits.acquire(self.key);
    if (limited) {
      this.#refuse(stream, 503, limited);
      ctx.limits.logRefusal(ctx.throttle, this.#log, self.key, "hbone_stream", limited);
      return;
    }
    let app: { fd: number; started: number };
    try {
      const source = appSource(peer.ip, target.ip);
      app = ctx.sockets(self.netns, { address: target.ip, port: target.port, ...(source ? { source } : {}) });
    } catch (err) {
      ctx.limits.release(self.key);
      if (!loggedSocketExhaustion(ctx, err))
        this.#log.debug({ err, target }, "inbound HBONE stream: no socket for the app connection; answered 503");
      this.#refuse(stream, 503, "upstream_error");
      return;
    }
    const { fd } = app;
    ctx.limits.track(fd, self.key);
    const wait = whenConnected(ctx.reactor, fd, app.started, ctx.tuning.handshakeTimeoutMs, (errno) => {
      this.#connecting.delete(fd);
      if (errno !== 0) {
        closeSocket(fd);
        this.#log.debug(
          { errno: errnoName(errno), target },
          "inbound HBONE stream: the app refused the connection; answered 503",
        );
        this.#refuse(stream, 503, errno === ECONNREFUSED ? "upstream_refused" : "upstream_error");
        return;
      }
      if (stream.closed) {
        closeSocket(fd);
        return;
      }
      stream.respond(200);
      ctx.observer.connectionOpened(info);
      const done = reportClose(ctx.observer, info);
      const untrack = ctx.authorized.add(self, attributes, () => stream.reset(ErrorCode.CANCEL));
      // The relay counts fd -> stream (app -> source) as aToB; the report counts from the source (the stream's peer).
      relayFdStream(ctx.reactor, ctx.counters, fd, stream, (r) => {
        untrack();
        done({ ...r, aToB: r.bToA, bToA: r.aToB });
      });
    });
    this.#connecting.set(fd, wait);
  }
}

/**
 * Who the source is, for metric labels and the access log: the workload the cluster's records place at the
 * tunnel's outer address (the source agent dials from inside the source pod), when that workload carries the
 * identity the peer proved; "unknown" otherwise. Never the peer's `baggage`, which says whatever the peer likes: a
 * label taken from it would let one peer mint a series per value it sends.
 */
function sourceOf(ctx: DataplaneContext, peer: PeerInfo): Peer {
  const known = ctx.index().lookup(peer.ip);
  const named = known?.spiffe === peer.spiffe ? known : undefined;
  return {
    workload: named?.workload ?? "unknown",
    namespace: named?.pod.namespace ?? "unknown",
    principal: peer.spiffe,
    ip: peer.ip,
  };
}

/** A CONNECT that will not be served: its status and the end of the stream, or a reset once headers were sent. */
function answerRefused(stream: H2Stream, status: number): void {
  if (!stream.headersDone) stream.respond(status, true);
  else stream.reset(ErrorCode.REFUSED_STREAM);
}

function secondsSince(started: bigint): number {
  return Number(process.hrtime.bigint() - started) / 1e9;
}
