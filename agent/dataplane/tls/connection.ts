import koffi from "koffi";
import { errnoName } from "../../../native-bindings/errors.js";
import {
  errClear,
  errDrain,
  errIsUnexpectedEof,
  SSL_ERROR_WANT_READ,
  SSL_ERROR_WANT_WRITE,
  SSL_ERROR_ZERO_RETURN,
  type SslPtr,
  sslAlpnSelected,
  sslDoHandshake,
  sslFree,
  sslGet1PeerCertificate,
  sslGetError,
  sslGetVerifyResult,
  sslHasPending,
  sslNew,
  sslPeerCertChain,
  sslReadEx,
  sslSessionReused,
  sslSetAcceptState,
  sslSetConnectState,
  sslSetFd,
  sslShutdown,
  sslWriteEx,
  X509_V_OK,
  x509Der,
  x509Free,
} from "../../../native-bindings/openssl.js";
import { type PeerValidation, validatePeerChain } from "../../identity/validate.js";
import type { TlsContext } from "./context.js";
import { TlsError } from "./errors.js";
import { liveTlsObjects } from "./live-objects.js";

/** read()/write() results other than a byte count (negative, so a count is always > 0). */
export const TLS_WANT_READ = -1;
export const TLS_WANT_WRITE = -2;
/** The peer sent close_notify: a clean end of its direction. */
export const TLS_EOF = -3;
/** The peer's TCP stream ended without close_notify: the end of its direction, but a truncated one. */
export const TLS_EOF_UNCLEAN = -4;

export type TlsRole = "client" | "server";
export type TlsStep = "done" | "want_read" | "want_write";

/** One size_t out-parameter for every *_ex call of this thread (read right after each call). */
const count = Buffer.alloc(8);

/**
 * Why OpenSSL through koffi and not Node's `tls` in the worker (test/bench/tls-spike.ts, same machine, same run,
 * 3 rounds): a TLS echo server used 17-18 µs of CPU per 64-byte request against Node tls's 20-24, and 2.1-2.9 ms per
 * full mTLS handshake against 3.1-3.6, and it keeps the whole data path on one epoll loop with no Node stream.
 *
 * Non-blocking TLS over a connected, non-blocking socket fd (SSL_set_fd), driven by the caller's event loop:
 * every call returns at once with a result or what it waits for (TLS_WANT_READ: wait for EPOLLIN, TLS_WANT_WRITE:
 * EPOLLOUT). Either call may want either direction: a read can need a write (TLS 1.3 key update) and a write a
 * read. Records OpenSSL has already decrypted are invisible to epoll, so a reader calls read() until it returns
 * TLS_WANT_READ (or an end) before it waits again.
 *
 * Owners: the fd stays the caller's (SSL_set_fd never closes it); the SSL object is this connection's, freed by
 * free() exactly once. Order on teardown: remove the fd from epoll, free(), then close the fd.
 *
 * OpenSSL's error queue is per thread and shared with Node's own crypto on the main thread: every call starts
 * with ERR_clear_error and every failure drains the queue into its TlsError, so no stale error is misread later.
 */
export class TlsConnection {
  readonly fd: number;
  readonly role: TlsRole;
  readonly #context: TlsContext;
  #ssl: SslPtr | null;
  /** A fatal error happened: OpenSSL forbids SSL_shutdown afterwards. */
  #fatal = false;

  constructor(context: TlsContext, fd: number, role: TlsRole) {
    errClear();
    const ssl = sslNew(context.pointer());
    if (ssl === null) throw new TlsError("tls_context", "SSL_new failed", errDrain());
    if (!sslSetFd(ssl, fd)) {
      const reasons = errDrain();
      sslFree(ssl);
      throw new TlsError("tls_context", `SSL_set_fd(${fd}) failed`, reasons);
    }
    if (role === "server") sslSetAcceptState(ssl);
    else sslSetConnectState(ssl);
    this.fd = fd;
    this.role = role;
    this.#context = context;
    this.#ssl = ssl;
    liveTlsObjects.connections++;
  }

  #live(): SslPtr {
    if (this.#ssl === null) throw new TlsError("tls_closed", "TLS connection used after free()");
    return this.#ssl;
  }

  /**
   * Advances the handshake. "done" means both ends verified each other's chain against the trust bundle (a peer
   * without a certificate, or with one from another CA, fails here on the server). On a TLS 1.3 client "done"
   * comes before the server judged the client's certificate: a refusal shows as the first read's error.
   */
  handshake(): TlsStep {
    const ssl = this.#live();
    errClear();
    const ret = sslDoHandshake(ssl);
    if (ret === 1) {
      const verify = sslGetVerifyResult(ssl);
      if (verify !== X509_V_OK) {
        this.#fatal = true;
        throw new TlsError("tls_handshake", `peer certificate failed verification (X509 error ${verify})`);
      }
      return "done";
    }
    const errno = koffi.errno();
    return this.#stepOrThrow(sslGetError(ssl, ret), "tls_handshake", "TLS handshake failed", errno);
  }

  /** Decrypted bytes into `buf` (from its start): the count, TLS_WANT_READ/WRITE, TLS_EOF or TLS_EOF_UNCLEAN. */
  read(buf: Buffer, length = buf.length): number {
    const ssl = this.#live();
    errClear();
    const ret = sslReadEx(ssl, buf, length, count);
    if (ret === 1) return count.readUInt32LE(0);
    const errno = koffi.errno();
    const error = sslGetError(ssl, ret);
    if (error === SSL_ERROR_ZERO_RETURN) return TLS_EOF;
    if (error !== SSL_ERROR_WANT_READ && error !== SSL_ERROR_WANT_WRITE && errIsUnexpectedEof()) {
      errDrain();
      this.#fatal = true;
      return TLS_EOF_UNCLEAN;
    }
    return this.#wantOrThrow(error, "TLS read failed", errno);
  }

  /**
   * Encrypts and sends up to `length` bytes from the start of `buf`: the count taken (partial writes are on, as
   * with write(2)), or TLS_WANT_WRITE/READ. After a want, retry with the same bytes (they may sit in another
   * Buffer: ACCEPT_MOVING_WRITE_BUFFER) and at least the same length.
   */
  write(buf: Buffer, length = buf.length): number {
    const ssl = this.#live();
    if (length <= 0) return 0;
    errClear();
    const ret = sslWriteEx(ssl, buf, length, count);
    if (ret === 1) return count.readUInt32LE(0);
    const errno = koffi.errno();
    return this.#wantOrThrow(sslGetError(ssl, ret), "TLS write failed", errno);
  }

  /** A read or write that did not complete: the want it waits for, or a tls_protocol error. */
  #wantOrThrow(error: number, what: string, errno: number): number {
    const step = this.#stepOrThrow(error, "tls_protocol", what, errno);
    return step === "want_read" ? TLS_WANT_READ : TLS_WANT_WRITE;
  }

  /** A call that did not complete: the want it waits for, or a `code` error with OpenSSL's reasons. */
  #stepOrThrow(
    error: number,
    code: "tls_handshake" | "tls_protocol" | "tls_io",
    what: string,
    errno: number,
  ): "want_read" | "want_write" {
    if (error === SSL_ERROR_WANT_READ) return "want_read";
    if (error === SSL_ERROR_WANT_WRITE) return "want_write";
    throw this.#failure(code, what, errno);
  }

  /**
   * Sends close_notify (ends this direction; TLS 1.3 lets the peer keep sending). "done" once it is sent, or at
   * once after a fatal error (OpenSSL forbids a shutdown then; the caller just closes the socket).
   */
  shutdown(): TlsStep {
    const ssl = this.#live();
    if (this.#fatal) return "done";
    errClear();
    const ret = sslShutdown(ssl);
    if (ret >= 0) return "done";
    const errno = koffi.errno();
    return this.#stepOrThrow(sslGetError(ssl, ret), "tls_io", "TLS shutdown failed", errno);
  }

  /**
   * The peer's SPIFFE identity after the handshake: its certificate chain (DER, leaf first) through the project's
   * own validation (agent/identity/validate.ts).
   */
  peerIdentity(now?: number): PeerValidation {
    const ssl = this.#live();
    const leaf = sslGet1PeerCertificate(ssl);
    if (leaf === null) return { ok: false, reason: "no_certificate", detail: "peer presented no certificate" };
    let chain: Buffer[];
    try {
      chain = [x509Der(leaf)];
    } finally {
      x509Free(leaf);
    }
    const leafDer = chain[0] as Buffer;
    // A client's list repeats the server's leaf; a server's list holds the client's intermediates only.
    for (const x of sslPeerCertChain(ssl)) {
      const der = x509Der(x);
      if (!der.equals(leafDer)) chain.push(der);
    }
    return validatePeerChain(chain, {
      trustDomain: this.#context.trustDomain,
      trustBundle: this.#context.trustRoots,
      peerRole: this.role === "server" ? "client" : "server",
      ...(now === undefined ? {} : { now }),
    });
  }

  /**
   * Whether OpenSSL already holds bytes a read() would return without the socket. A reader whose last read()
   * returned less than it asked for may stop when this is false (level-triggered epoll reports what is still in
   * the socket), saving the read(2) that would only say EAGAIN; when true it must read on.
   */
  hasPending(): boolean {
    return sslHasPending(this.#live());
  }

  /** The ALPN protocol both ends agreed on ("" for none). */
  alpn(): string {
    return sslAlpnSelected(this.#live());
  }

  sessionReused(): boolean {
    return sslSessionReused(this.#live());
  }

  get freed(): boolean {
    return this.#ssl === null;
  }

  /** Frees the SSL object (not the fd); a second call does nothing. */
  free(): void {
    if (this.#ssl === null) return;
    sslFree(this.#ssl);
    this.#ssl = null;
    liveTlsObjects.connections--;
  }

  #failure(code: "tls_handshake" | "tls_protocol" | "tls_io", what: string, errno: number): TlsError {
    this.#fatal = true;
    const reasons = errDrain();
    if (reasons.length === 0 && errno !== 0) return new TlsError("tls_io", `${what}: ${errnoName(errno)}`, [], errno);
    if (reasons.length === 0) return new TlsError(code, `${what}: the peer closed the connection`);
    return new TlsError(code, what, reasons, errno);
  }
}
