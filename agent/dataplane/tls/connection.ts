import koffi from "koffi";
import { errnoName } from "../../../native-bindings/errors.js";
import { EAGAIN, EINTR, write as writeFd } from "../../../native-bindings/io.js";
import {
  bioRead,
  errClear,
  errDrain,
  errIsUnexpectedEof,
  SSL_ERROR_WANT_READ,
  SSL_ERROR_WANT_WRITE,
  SSL_ERROR_ZERO_RETURN,
  type SslPtr,
  type SslWriteBioPtr,
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
  sslSetReadFdWriteMemory,
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

/** The most plaintext one TLS record carries (RFC 8446 5.1): each SSL_write here seals at most one record. */
export const RECORD_BYTES = 16 * 1024;
/**
 * Ciphertext gathered from the memory BIO for one write(2), at most (16 records). test/bench/tls-h2-bench.ts bulk
 * 1 GiB, both ends in one process, whole-process CPU, medians of 5 rotated runs (machine load 2): SSL_set_fd, one
 * write(2) per record, 1.41 s (sys 0.55); here with 64 KiB per write(2) 1.37, 128 KiB 1.37, 256 KiB 1.33 (sys 0.39),
 * 512 KiB 1.33. 256 KiB also gathers four of the 64 KiB batches a bulk sender's session hands down in one turn.
 */
export const SEND_BYTES = 256 * 1024;
/**
 * ONE send buffer and ONE staging buffer per thread (module state is per worker thread): a write seals records into
 * the first and writes it before it returns, so no connection keeps it; what the socket did not take is copied out
 * (#held). The slack past SEND_BYTES takes the last record sealed (a TLS 1.3 record adds 22 bytes) and a handshake
 * flight; a larger flight spills into #held, in order.
 */
const sendBuffer = Buffer.allocUnsafe(SEND_BYTES + 4 * RECORD_BYTES);
const stage = Buffer.allocUnsafe(RECORD_BYTES);
/**
 * Ciphertext held for the socket above which read() stops (TLS_WANT_WRITE) until the socket takes it, should reading
 * ever make OpenSSL write: a peer that does not read could otherwise make us hold answers without bound. Writes stop
 * sealing as soon as anything is held, so they alone stay under SEND_BYTES plus a record.
 */
const HELD_READ_LIMIT = SEND_BYTES + 4 * RECORD_BYTES;

/**
 * Why OpenSSL through koffi and not Node's `tls` in the worker (test/bench/tls-spike.ts, same machine, same run,
 * 3 rounds): a TLS echo server used 17-18 µs of CPU per 64-byte request against Node tls's 20-24, and 2.1-2.9 ms per
 * full mTLS handshake against 3.1-3.6, and it keeps the whole data path on one epoll loop with no Node stream.
 *
 * Non-blocking TLS over a connected, non-blocking socket fd, driven by the caller's event loop: every call returns
 * at once with a result or what it waits for (TLS_WANT_READ: wait for EPOLLIN, TLS_WANT_WRITE: EPOLLOUT). Records
 * OpenSSL has already decrypted are invisible to epoll, so a reader calls read() until it returns TLS_WANT_READ (or
 * an end) before it waits again.
 *
 * OpenSSL reads the socket itself (a socket BIO, with read-ahead) but writes into a memory BIO: this class takes the
 * records out and writes them to the socket, several per write(2). With SSL_set_fd OpenSSL wrote every 16 KiB record
 * with a write(2) of its own, and a bulk sender spent its time there: 256 MiB of tls-h2-bench bulk took 20,650
 * write(2) (strace -f -c), now 1,320; per GiB (both ends) sys 0.55 -> 0.39 s, user 0.88 -> 0.93 s (each record is
 * now copied twice in user space, into the memory BIO and out of it), 1.41 -> 1.33 s in all. Where a write(2) costs
 * more (veth, bridges, nftables) it counts for more: through two agents (make bench BENCH=proxy) the sending agent,
 * CPU-bound, carried 2.6 Gbit/s at 98% of a core before and 3.44 Gbit/s at 92% after (separate runs).
 *
 * Every call that can make OpenSSL write (the handshake, read, write, shutdown) sends what it produced before it
 * returns; what the socket does not take is held (copied, in order) and goes first on the next call, or on flush()
 * once EPOLLOUT says the socket has room: unsentBytes says whether any is held. A failing call still offers
 * OpenSSL's alert to the socket once, so the peer hears why (unknown_ca, ...).
 *
 * Owners: the fd stays the caller's (the socket BIO never closes it); the SSL object is this connection's, freed by
 * free() exactly once, and with it the memory BIO (SSL_set0_wbio gave it to the SSL object). Order on teardown:
 * remove the fd from epoll, free(), then close the fd.
 *
 * OpenSSL's error queue is per thread and shared with Node's own crypto on the main thread: every call starts
 * with ERR_clear_error and every failure drains the queue into its TlsError, so no stale error is misread later.
 */
export class TlsConnection {
  readonly fd: number;
  readonly role: TlsRole;
  readonly #context: TlsContext;
  #ssl: SslPtr | null;
  /** OpenSSL's output: owned by the SSL object, valid while #ssl is. */
  readonly #wbio: SslWriteBioPtr;
  /** Ciphertext the socket did not take yet, from #heldOffset on; null when none is. */
  #held: Buffer | null = null;
  #heldOffset = 0;
  /** A fatal error happened: OpenSSL forbids SSL_shutdown afterwards. */
  #fatal = false;
  /** close_notify is in #held or gone: SSL_shutdown is not called again (a second call would read the socket). */
  #closeNotified = false;

  constructor(context: TlsContext, fd: number, role: TlsRole) {
    errClear();
    const ssl = sslNew(context.pointer());
    if (ssl === null) throw new TlsError("tls_context", "SSL_new failed", errDrain());
    const wbio = sslSetReadFdWriteMemory(ssl, fd);
    if (wbio === null) {
      const reasons = errDrain();
      sslFree(ssl);
      throw new TlsError("tls_context", `cannot bind fd ${fd} and a memory BIO to SSL`, reasons);
    }
    if (role === "server") sslSetAcceptState(ssl);
    else sslSetConnectState(ssl);
    this.fd = fd;
    this.role = role;
    this.#context = context;
    this.#ssl = ssl;
    this.#wbio = wbio;
    liveTlsObjects.connections++;
  }

  #live(): SslPtr {
    if (this.#ssl === null) throw new TlsError("tls_closed", "TLS connection used after free()");
    return this.#ssl;
  }

  /**
   * Advances the handshake. "done" means both ends verified each other's chain against the trust bundle (a peer
   * without a certificate, or with one from another CA, fails here on the server) and our last flight left. On a
   * TLS 1.3 client "done" comes before the server judged the client's certificate: a refusal shows as the first
   * read's error. "want_write": a flight waits for the socket (a connect still in progress says EAGAIN too).
   */
  handshake(): TlsStep {
    const ssl = this.#live();
    errClear();
    if (!this.#sendHeld("TLS handshake failed")) return "want_write";
    const ret = sslDoHandshake(ssl);
    const errno = koffi.errno();
    if (ret !== 1) {
      const step = this.#stepOrThrow(sslGetError(ssl, ret), "tls_handshake", "TLS handshake failed", errno);
      return this.#sendOutput("TLS handshake failed") ? step : "want_write";
    }
    const verify = sslGetVerifyResult(ssl);
    if (verify !== X509_V_OK) {
      this.#fatal = true;
      throw new TlsError("tls_handshake", `peer certificate failed verification (X509 error ${verify})`);
    }
    return this.#sendOutput("TLS handshake failed") ? "done" : "want_write";
  }

  /**
   * Decrypted bytes into `buf` (from its start): the count, TLS_WANT_READ, TLS_EOF or TLS_EOF_UNCLEAN; TLS_WANT_WRITE
   * only while more than HELD_READ_LIMIT of ciphertext waits for the socket. Anything OpenSSL wrote while reading is
   * sent, or held (one BIO_read per call, ~70 ns, finds out); a socket error while sending it is left to the next
   * write or flush to report, so the bytes read are never lost to it. OpenSSL 3.0 writes nothing here in practice: it
   * answers a KeyUpdate request with our next record (tls_process_key_update only notes it), and an alert before a
   * failure goes out with the failure (#failure).
   */
  read(buf: Buffer, length = buf.length): number {
    const ssl = this.#live();
    errClear();
    if (this.unsentBytes > HELD_READ_LIMIT) {
      this.#trySendHeld();
      if (this.unsentBytes > HELD_READ_LIMIT) return TLS_WANT_WRITE;
    }
    const ret = sslReadEx(ssl, buf, length, count);
    const errno = koffi.errno();
    const error = ret === 1 ? 0 : sslGetError(ssl, ret);
    const produced = this.#collect(0);
    if (produced > 0) {
      this.#hold(sendBuffer, produced);
      this.#trySendHeld();
    }
    if (ret === 1) return count.readUInt32LE(0);
    if (error === SSL_ERROR_ZERO_RETURN) return TLS_EOF;
    if (error !== SSL_ERROR_WANT_READ && error !== SSL_ERROR_WANT_WRITE && errIsUnexpectedEof()) {
      errDrain();
      this.#fatal = true;
      return TLS_EOF_UNCLEAN;
    }
    return this.#wantOrThrow(error, "TLS read failed", errno);
  }

  /**
   * Encrypts and sends up to `length` bytes from the start of `buf`: the count taken, or TLS_WANT_WRITE/READ (none
   * taken). Taken is not sent: see writeChunks, and flush() once unsentBytes > 0.
   */
  write(buf: Buffer, length = buf.length): number {
    if (!(length >= 0 && length <= buf.length)) {
      throw new RangeError(`length ${length} outside a ${buf.length}-byte buffer`);
    }
    return this.writeChunks([buf], 0, 0, length);
  }

  /**
   * Encrypts up to `bytes` of plaintext from `chunks` (from chunks[head] at `offset` on, in order) as records, as
   * many as SEND_BYTES of ciphertext holds, and sends them with one write(2). Returns the plaintext count taken
   * (partial, as with write(2)): taken means encrypted, so the caller drops those bytes; the socket may not have
   * taken all of their ciphertext (unsentBytes > 0 then: wait for EPOLLOUT and flush()). TLS_WANT_WRITE when
   * ciphertext held from before still waits for the socket (nothing taken), TLS_WANT_READ if OpenSSL needs a read
   * first. The chunks are read during the call only; `bytes` must not exceed what they hold from there.
   */
  writeChunks(chunks: readonly Buffer[], head: number, offset: number, bytes: number): number {
    const ssl = this.#live();
    if (bytes <= 0) return 0;
    errClear();
    if (!this.#sendHeld("TLS write failed")) return TLS_WANT_WRITE;
    let taken = 0;
    let filled = 0;
    let want = 0;
    let i = head;
    let off = offset;
    // A last record shorter than a full one rides along (sendBuffer has room for it): it would be a write(2) alone.
    while (taken < bytes && (filled < SEND_BYTES || bytes - taken < RECORD_BYTES)) {
      const len = Math.min(RECORD_BYTES, bytes - taken);
      const c = chunks[i] as Buffer;
      let buf: Buffer;
      if (c.length - off >= len) buf = off === 0 ? c : c.subarray(off);
      else buf = stageFrom(chunks, i, off, len);
      const ret = sslWriteEx(ssl, buf, len, count);
      if (ret !== 1) {
        const errno = koffi.errno();
        const error = sslGetError(ssl, ret);
        // Records sealed before go first, whether this is a want or a failure (whose alert follows them).
        if (filled > 0) this.#hold(sendBuffer, filled);
        filled = 0;
        want = this.#wantOrThrow(error, "TLS write failed", errno);
        break;
      }
      let n = count.readUInt32LE(0);
      taken += n;
      while (n > 0) {
        const rest = (chunks[i] as Buffer).length - off;
        if (n < rest) {
          off += n;
          break;
        }
        n -= rest;
        i++;
        off = 0;
      }
      filled = this.#collect(filled);
    }
    this.#send(filled, "TLS write failed");
    return taken > 0 ? taken : want;
  }

  /** Sends ciphertext held from earlier calls: 0 once none is left, TLS_WANT_WRITE while the socket is full. */
  flush(): number {
    this.#live();
    return this.#sendHeld("TLS write failed") ? 0 : TLS_WANT_WRITE;
  }

  /** Ciphertext produced but not yet taken by the socket (0 after free()). */
  get unsentBytes(): number {
    return this.#held === null ? 0 : this.#held.length - this.#heldOffset;
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
   * Sends close_notify (ends this direction; TLS 1.3 lets the peer keep sending): "done" once it left with all
   * ciphertext before it, "want_write" while the socket holds it back (call again on EPOLLOUT), or "done" at once
   * after a fatal error (OpenSSL forbids a shutdown then; the caller just closes the socket).
   */
  shutdown(): TlsStep {
    const ssl = this.#live();
    if (this.#fatal) return "done";
    errClear();
    if (!this.#closeNotified) {
      const ret = sslShutdown(ssl);
      if (ret < 0) {
        const errno = koffi.errno();
        return this.#stepOrThrow(sslGetError(ssl, ret), "tls_io", "TLS shutdown failed", errno);
      }
      this.#closeNotified = true;
      const produced = this.#collect(0);
      if (produced > 0) this.#hold(sendBuffer, produced);
    }
    return this.#sendHeld("TLS shutdown failed") ? "done" : "want_write";
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

  /** Frees the SSL object and its memory BIO (not the fd), dropping held ciphertext; a second call does nothing. */
  free(): void {
    if (this.#ssl === null) return;
    sslFree(this.#ssl);
    this.#ssl = null;
    this.#held = null;
    this.#heldOffset = 0;
    liveTlsObjects.connections--;
  }

  /**
   * Moves what OpenSSL wrote into the memory BIO to sendBuffer from `filled` on; returns the new fill. A read that
   * did not fill the room emptied the BIO. A fill that reaches the end of sendBuffer is held first (only a flight
   * larger than its slack can).
   */
  #collect(filled: number): number {
    for (;;) {
      const room = sendBuffer.length - filled;
      const n = bioRead(this.#wbio, filled === 0 ? sendBuffer : sendBuffer.subarray(filled), room);
      if (n < room) return n > 0 ? filled + n : filled;
      this.#hold(sendBuffer, sendBuffer.length);
      filled = 0;
    }
  }

  /** Collects OpenSSL's output and sends it after what is held: true when nothing is left waiting for the socket. */
  #sendOutput(what: string): boolean {
    return this.#send(this.#collect(0), what);
  }

  /**
   * Sends held ciphertext, then sendBuffer's first `filled` bytes, holding a copy of what the socket did not take:
   * true when everything left. Throws tls_io when the socket fails.
   */
  #send(filled: number, what: string): boolean {
    if (this.#held !== null) {
      if (filled > 0) this.#hold(sendBuffer, filled);
      return this.#sendHeld(what);
    }
    if (filled === 0) return true;
    const n = this.#writeSocket(sendBuffer, filled, what);
    if (n < filled) this.#hold(sendBuffer.subarray(n), filled - n);
    return n === filled;
  }

  /** Sends what is held: true when none is left (or none was). Throws tls_io when the socket fails. */
  #sendHeld(what: string): boolean {
    const held = this.#held;
    if (held === null) return true;
    const off = this.#heldOffset;
    return this.#heldSent(this.#writeSocket(off === 0 ? held : held.subarray(off), held.length - off, what));
  }

  /** #sendHeld for a caller that must not fail: a socket error stays for the next write or flush to report. */
  #trySendHeld(): void {
    const held = this.#held;
    if (held === null || this.#fatal) return;
    const off = this.#heldOffset;
    const n = writeFd(this.fd, off === 0 ? held : held.subarray(off), held.length - off);
    if (n > 0) this.#heldSent(n);
  }

  /** The socket took `n` more of the held bytes: true once none is left. */
  #heldSent(n: number): boolean {
    const held = this.#held as Buffer;
    if (this.#heldOffset + n < held.length) {
      this.#heldOffset += n;
      return false;
    }
    this.#held = null;
    this.#heldOffset = 0;
    return true;
  }

  /** Appends a copy of `buf`'s first `length` bytes to what is held. */
  #hold(buf: Buffer, length: number): void {
    const copy = Buffer.from(buf.subarray(0, length));
    this.#held = this.#held === null ? copy : Buffer.concat([this.#held.subarray(this.#heldOffset), copy]);
    this.#heldOffset = 0;
  }

  /** write(2) of `length` bytes from `buf`'s start: the count taken (0 when the socket is full), or throws tls_io. */
  #writeSocket(buf: Buffer, length: number, what: string): number {
    const n = writeFd(this.fd, buf, length);
    if (n >= 0) return n;
    if (n === -EAGAIN || n === -EINTR) return 0;
    this.#fatal = true;
    this.#held = null;
    errDrain();
    throw new TlsError("tls_io", `${what}: ${errnoName(-n)}`, [], -n);
  }

  #failure(code: "tls_handshake" | "tls_protocol" | "tls_io", what: string, errno: number): TlsError {
    this.#fatal = true;
    const reasons = errDrain();
    // OpenSSL wrote its alert into the memory BIO: one try to send it (after what is held), so the peer hears why.
    const produced = this.#collect(0);
    if (produced > 0) this.#hold(sendBuffer, produced);
    const held = this.#held;
    if (held !== null) writeFd(this.fd, held.subarray(this.#heldOffset), held.length - this.#heldOffset);
    // Nothing more is sent on a failed connection: unsentBytes is 0 from here on.
    this.#held = null;
    if (reasons.length === 0 && errno !== 0) return new TlsError("tls_io", `${what}: ${errnoName(errno)}`, [], errno);
    if (reasons.length === 0) return new TlsError(code, `${what}: the peer closed the connection`);
    return new TlsError(code, what, reasons, errno);
  }
}

/** Copies `want` bytes of the chunks from chunks[i] at `off` on into the staging buffer. */
function stageFrom(chunks: readonly Buffer[], i: number, off: number, want: number): Buffer {
  let len = 0;
  while (len < want) {
    const c = chunks[i] as Buffer;
    const k = Math.min(c.length - off, want - len);
    c.copy(stage, len, off, off + k);
    len += k;
    i++;
    off = 0;
  }
  return stage;
}
