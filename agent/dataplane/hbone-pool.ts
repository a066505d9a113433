/**
 * Client side of HBONE on a data-plane worker (data path v2): one mutual-TLS HTTP/2 connection per (source pod,
 * destination pod IP and the identity expected there), reused by every CONNECT stream between them, so a new
 * application connection costs one stream, not a handshake. A session verified for one identity never carries traffic
 * meant for another, even when the workload index moves the IP to a new pod. Sessions left without streams for
 * `poolIdleMs` are closed.
 *
 * The socket comes from the context's factory (inside the source pod's namespace with the proxy mark in
 * production), TLS is the worker's own (TlsTransport on its Reactor). The peer must present exactly the identity the
 * workload index expects for the destination IP; anything else is dropped before a byte of the app is sent.
 */
import { errnoName } from "../../native-bindings/errors.js";
import { closeFd } from "../../native-bindings/io.js";
import type { HeaderList } from "../h2/hpack.js";
import { H2Session } from "../h2/session.js";
import type { H2Stream } from "../h2/stream.js";
import { formatAuthority } from "../proxy/authority.js";
import { ProxyError } from "../proxy/errors.js";
import type { HandshakeFailure } from "../proxy/reasons.js";
import { h2Settings } from "../proxy/tuning.js";
import type { LocalWorkload, Workload } from "../proxy/workload-index.js";
import { HBONE_PORT } from "../redirect/ports.js";
import type { DataplaneContext } from "./context.js";
import { checkHbonePeer } from "./hbone-peer.js";
import { watchPeerFd } from "./peer-timeout.js";
import { whenConnected } from "./pod-socket.js";
import type { TlsContext } from "./tls/context.js";
import { handshakeFailure } from "./tls/errors.js";
import { TlsTransport } from "./tls-transport.js";

interface PooledSession {
  session: H2Session;
  /** The context the session was made with: another one for the source means its certificate was rotated. */
  context: TlsContext;
}

export interface HbonePoolOptions {
  /** Port of the HBONE listener on destination pods. */
  port?: number;
}

export class HbonePool {
  readonly #ctx: DataplaneContext;
  readonly #port: number;
  readonly #sessions = new Map<string, Promise<PooledSession>>();
  /** Dials and handshakes under way: closeAll() drops them at once (a stopping worker's thread must keep no fd). */
  readonly #underway = new Set<() => void>();
  /**
   * Every session this pool made that has not closed, pooled or draining (taken out of the pool by closeSource, a
   * rotation or GOAWAY, finishing its streams): closeAll() destroys them all. A draining session left alone would
   * hold its worker thread up to the close timeout after the worker stopped (seen: an agent killed 10 s into its
   * SIGTERM shutdown).
   */
  readonly #live = new Set<H2Session>();
  /** closeAll() ran: what fails from now on was dropped by us, not refused by a peer, and is not reported. */
  #closed = false;

  constructor(ctx: DataplaneContext, options: HbonePoolOptions = {}) {
    this.#ctx = ctx;
    this.#port = options.port ?? HBONE_PORT;
  }

  /** Open a CONNECT stream to `ip:port` at the destination workload, over a pooled session. */
  async open(src: LocalWorkload, dst: Workload, ip: string, port: number, headers: HeaderList): Promise<H2Stream> {
    return this.#request(src, dst, ip, [[":method", "CONNECT"], [":authority", formatAuthority(ip, port)], ...headers]);
  }

  /** Sessions currently pooled (for the admin server and tests). */
  get size(): number {
    return this.#sessions.size;
  }

  /** The pod `podKey` left the mesh: its sessions take no new streams, finish the ones they carry and close. */
  closeSource(podKey: string): void {
    for (const [key, pending] of this.#sessions) {
      if (!key.startsWith(`${podKey}|`)) continue;
      this.#sessions.delete(key);
      pending.then((s) => s.session.close()).catch(() => {});
    }
  }

  /** Tear every pooled session down now, resetting its streams (the worker is stopping). */
  closeAll(): void {
    this.#closed = true;
    for (const drop of [...this.#underway]) drop();
    this.#underway.clear();
    for (const p of this.#sessions.values()) p.then((s) => s.session.destroy()).catch(() => {});
    this.#sessions.clear();
    for (const session of [...this.#live]) session.destroy();
    this.#live.clear();
  }

  /**
   * The stream is opened in the same synchronous step as the check that the session can take it: two opens that
   * both saw room for one more stream (the peer's MAX_CONCURRENT_STREAMS, or the last stream id) would otherwise both
   * take it, and the second fail with REFUSED_STREAM instead of getting a new session.
   */
  async #request(src: LocalWorkload, dst: Workload, ip: string, request: HeaderList): Promise<H2Stream> {
    const context = this.#ctx.tlsContext(src.spiffe);
    if (!context) throw new ProxyError("no_identity", `${src.key} has no valid certificate`);
    const key = `${src.key}|${ip}|${dst.spiffe}`;
    for (;;) {
      const pending = this.#sessions.get(key);
      if (!pending) break;
      const pooled = await pending.catch(() => undefined);
      // Replaced while we waited: look again.
      if (this.#sessions.get(key) !== pending) continue;
      if (pooled?.session.canRequest && pooled.context === context) return pooled.session.request(request);
      // A rotated certificate, or a session that takes no more streams, gets a fresh session; the old one drains
      // its streams and then closes.
      this.#sessions.delete(key);
      pooled?.session.close();
      break;
    }
    const created = this.#connect(src, dst, ip);
    this.#sessions.set(key, created);
    const forget = () => {
      if (this.#sessions.get(key) === created) this.#sessions.delete(key);
    };
    created.then(({ session }) => this.#expire(session, forget), forget);
    return (await created).session.request(request);
  }

  /** A pooled session leaves the pool when it closes, when the peer sends GOAWAY, or once idle for poolIdleMs. */
  #expire(session: H2Session, forget: () => void): void {
    this.#live.add(session);
    let idle: NodeJS.Timeout | undefined;
    session.once("close", () => {
      this.#live.delete(session);
      clearTimeout(idle);
      forget();
    });
    session.once("goaway", forget);
    session.on("idle", () => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        if (session.streamCount > 0) return;
        forget();
        session.close();
      }, this.#ctx.tuning.poolIdleMs).unref();
    });
  }

  async #connect(src: LocalWorkload, dst: Workload, ip: string): Promise<PooledSession> {
    const ctx = this.#ctx;
    const t = ctx.tuning;
    const fd = await this.#dial(src, ip);
    // Looked up again: the certificate may have been rotated (the old context disposed) or withdrawn meanwhile.
    const context = ctx.tlsContext(src.spiffe);
    if (!context) {
      closeFd(fd);
      throw new ProxyError("no_identity", `${src.key} has no valid certificate`);
    }
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    const fail = (reason: HandshakeFailure, detail: string, cause?: unknown): never => {
      if (!this.#closed) ctx.observer.handshake("client", reason, seconds());
      throw new ProxyError(`hbone_${reason}`, `HBONE to ${dst.key} (${ip}): ${detail}`, { cause });
    };
    let transport: TlsTransport;
    try {
      let drop: (() => void) | undefined;
      transport = await TlsTransport.open({
        reactor: ctx.reactor,
        context,
        fd,
        role: "client",
        handshakeTimeoutMs: t.handshakeTimeoutMs,
        onStart: (handshaking) => {
          drop = () => handshaking.destroy();
          this.#underway.add(drop);
        },
      }).finally(() => {
        if (drop) this.#underway.delete(drop);
      });
    } catch (err) {
      const reason = handshakeFailure(err);
      return fail(reason, reason === "timeout" ? "TLS handshake timed out" : (err as Error).message, err);
    }
    const peer = checkHbonePeer(transport.peer, transport.alpn, dst.id);
    if (!peer.ok) {
      transport.destroy();
      return fail(peer.reason, peer.detail);
    }
    ctx.observer.handshake("client", "ok", seconds());
    const session = new H2Session(transport, {
      role: "client",
      settings: h2Settings(t),
      settingsTimeoutMs: t.handshakeTimeoutMs,
    });
    return { session, context };
  }

  /**
   * A socket to the destination's HBONE port, connected: the fd, ours from here on. The connect is waited for on
   * its own, not left to the TLS handshake (which would wait for it too), so that an unreachable peer is
   * hbone_connect_failed within handshakeTimeoutMs and no handshake is counted; the cost is one epoll registration
   * per new session, not per stream.
   */
  #dial(src: LocalWorkload, ip: string): Promise<number> {
    const ctx = this.#ctx;
    const port = this.#port;
    const failed = (detail: string, cause?: unknown) =>
      new ProxyError("hbone_connect_failed", `cannot reach ${formatAuthority(ip, port)}: ${detail}`, { cause });
    let made: { fd: number; started: number };
    try {
      made = ctx.sockets(src.netns, { address: ip, port });
    } catch (err) {
      return Promise.reject(failed(String(err), err));
    }
    const { fd, started } = made;
    watchPeerFd(fd, ctx.tuning.peerTimeoutMs, ctx.log);
    return new Promise((resolve, reject) => {
      try {
        const waiting = whenConnected(ctx.reactor, fd, started, ctx.tuning.handshakeTimeoutMs, (errno) => {
          this.#underway.delete(drop);
          if (errno === 0) return resolve(fd);
          closeFd(fd);
          reject(failed(errnoName(errno)));
        });
        const drop = () => {
          waiting.cancel();
          closeFd(fd);
          reject(failed("the pool was closed"));
        };
        this.#underway.add(drop);
      } catch (err) {
        closeFd(fd);
        reject(failed(String(err), err));
      }
    });
  }
}
