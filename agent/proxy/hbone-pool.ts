/**
 * Client side of HBONE: one mutual-TLS HTTP/2 connection per (source pod, destination pod IP and the identity
 * expected there), reused by every CONNECT stream between them, so a new application connection costs one stream,
 * not a handshake. A session verified for one identity never carries traffic meant for another, even when the
 * workload index moves the IP to a new pod. Sessions left without streams for `poolIdleMs` are closed.
 *
 * The TCP connection is made from inside the source pod's namespace (the destination sees the pod's IP), with the
 * proxy mark so the pod's own rules do not capture it again. The peer must present exactly the identity the
 * workload index expects for the destination IP; anything else is dropped before a byte of the app is sent.
 */

import type { X509Certificate } from "node:crypto";
import tls, { type SecureContext } from "node:tls";
import type { HeaderList } from "../h2/hpack.js";
import { H2Session } from "../h2/session.js";
import { SocketTransport } from "../h2/socket-transport.js";
import type { H2Stream } from "../h2/stream.js";
import { sameSpiffeId } from "../identity/spiffe.js";
import { validateTlsPeer } from "../identity/validate.js";
import type { Logger } from "../log.js";
import { connectFromPodFd } from "../pod-netns.js";
import { HBONE_PORT, PROXY_MARK } from "../redirect/ports.js";
import { formatAuthority } from "./authority.js";
import { ProxyError } from "./errors.js";
import type { ProxyObserver } from "./observer.js";
import { watchPeer } from "./peer-timeout.js";
import { DEFAULT_TUNING, type HboneTuning, h2Settings } from "./tuning.js";
import type { LocalWorkload, Workload } from "./workload-index.js";

export interface HboneSource {
  workload: LocalWorkload;
  context: SecureContext;
}

interface PooledSession {
  session: H2Session;
  context: SecureContext;
}

export interface HbonePoolOptions {
  trustDomain: string;
  trustBundle: () => X509Certificate[];
  observer: ProxyObserver;
  log: Logger;
  tuning?: HboneTuning;
  mark?: number;
  /** Port of the HBONE listener on destination pods. */
  port?: number;
}

export class HbonePool {
  readonly #sessions = new Map<string, Promise<PooledSession>>();
  readonly #opts: HbonePoolOptions;
  readonly #tuning: HboneTuning;

  constructor(opts: HbonePoolOptions) {
    this.#opts = opts;
    this.#tuning = opts.tuning ?? DEFAULT_TUNING;
  }

  /** Open a CONNECT stream to `ip:port` at the destination workload, over a pooled session. */
  async open(src: HboneSource, dst: Workload, ip: string, port: number, headers: HeaderList): Promise<H2Stream> {
    const session = await this.#session(src, dst, ip);
    return session.request([[":method", "CONNECT"], [":authority", formatAuthority(ip, port)], ...headers]);
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

  /** Tear every pooled session down now, resetting its streams (the proxy is stopping). */
  closeAll(): void {
    for (const p of this.#sessions.values()) p.then((s) => s.session.destroy()).catch(() => {});
    this.#sessions.clear();
  }

  async #session(src: HboneSource, dst: Workload, ip: string): Promise<H2Session> {
    const key = `${src.workload.key}|${ip}|${dst.spiffe}`;
    for (;;) {
      const pending = this.#sessions.get(key);
      if (!pending) break;
      const pooled = await pending.catch(() => undefined);
      // Replaced while we waited: look again.
      if (this.#sessions.get(key) !== pending) continue;
      if (pooled?.session.canRequest && pooled.context === src.context) return pooled.session;
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
    return (await created).session;
  }

  /** A pooled session leaves the pool when it closes, when the peer sends GOAWAY, or once idle for poolIdleMs. */
  #expire(session: H2Session, forget: () => void): void {
    session.once("close", forget);
    session.once("goaway", forget);
    let idle: NodeJS.Timeout | undefined;
    session.on("idle", () => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        if (session.streamCount > 0) return;
        forget();
        session.close();
      }, this.#tuning.poolIdleMs).unref();
    });
    session.once("close", () => clearTimeout(idle));
  }

  async #connect(src: HboneSource, dst: Workload, ip: string): Promise<PooledSession> {
    const t = this.#tuning;
    const raw = await connectFromPodFd(
      src.workload.netns,
      {
        address: ip,
        port: this.#opts.port ?? HBONE_PORT,
        mark: this.#opts.mark ?? PROXY_MARK,
        timeoutMs: t.handshakeTimeoutMs,
        ...(t.socketBuffer ? { sendBuffer: t.socketBuffer, receiveBuffer: t.socketBuffer } : {}),
      },
      this.#opts.log,
    ).catch((cause) => {
      throw new ProxyError("hbone_connect_failed", `cannot reach ${ip}:${HBONE_PORT}`, { cause });
    });
    raw.setNoDelay(true);
    watchPeer(raw, t.peerTimeoutMs, this.#opts.log);
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    const socket = tls.connect({
      socket: raw,
      secureContext: src.context,
      ALPNProtocols: ["h2"],
      // Identity is checked below against the workload index (SPIFFE URI SAN), never by host name.
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
      servername: "hbone",
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => fail("timeout", "TLS handshake timed out"), t.handshakeTimeoutMs);
      const fail = (reason: string, detail: string, cause?: unknown) => {
        clearTimeout(timer);
        this.#opts.observer.handshake("client", reason, seconds());
        socket.destroy();
        reject(new ProxyError(`hbone_${reason}`, `HBONE to ${dst.key} (${ip}): ${detail}`, { cause }));
      };
      socket.once("error", (err) => fail("tls_error", err.message, err));
      socket.once("secureConnect", () => {
        const peer = validateTlsPeer(socket, {
          trustDomain: this.#opts.trustDomain,
          trustBundle: this.#opts.trustBundle(),
          peerRole: "server",
        });
        if (!peer.ok) return fail(peer.reason, peer.detail);
        if (!sameSpiffeId(peer.id, dst.id)) {
          return fail("identity_mismatch", `peer is not ${dst.spiffe}`);
        }
        if (socket.alpnProtocol !== "h2") return fail("bad_alpn", `ALPN ${String(socket.alpnProtocol)}`);
        clearTimeout(timer);
        socket.removeAllListeners("error");
        this.#opts.observer.handshake("client", "ok", seconds());
        resolve();
      });
    });
    const session = new H2Session(new SocketTransport(socket), {
      role: "client",
      settings: h2Settings(t),
      settingsTimeoutMs: t.handshakeTimeoutMs,
    });
    return { session, context: src.context };
  }
}
