import type { X509Certificate } from "node:crypto";
import {
  errClear,
  errDrain,
  evpPkeyFree,
  pemCertificates,
  pemPrivateKey,
  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER,
  SSL_MODE_ENABLE_PARTIAL_WRITE,
  SSL_OP_CIPHER_SERVER_PREFERENCE,
  SSL_OP_NO_RENEGOTIATION,
  SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
  SSL_VERIFY_PEER,
  type SslCtxPtr,
  sslCtxAdd1ChainCert,
  sslCtxAddTrustedCert,
  sslCtxCheckPrivateKey,
  sslCtxFree,
  sslCtxNew,
  sslCtxSelectAlpn,
  sslCtxSetAlpnProtos,
  sslCtxSetCiphersuites,
  sslCtxSetMode,
  sslCtxSetOptions,
  sslCtxSetProtoVersions,
  sslCtxSetReadAhead,
  sslCtxSetVerify,
  sslCtxUseCertificate,
  sslCtxUsePrivateKey,
  TLS1_3_VERSION,
  tlsMethod,
  x509Free,
} from "../../../native-bindings/openssl.js";
import { MESH_TLS } from "../../identity/tls-policy.js";
import { parseTrustBundle } from "../../identity/validate.js";
import { TlsError } from "./errors.js";
import { liveTlsObjects } from "./live-objects.js";

export interface TlsContextOptions {
  /** The workload's certificate chain, leaf first (PEM). */
  chainPem: string;
  /** Its private key (PEM). */
  keyPem: string;
  /** The trust bundle: the roots a peer's chain must end in (PEM). */
  bundlePem: string;
  /** The mesh's trust domain: a peer's SPIFFE ID must be in it. */
  trustDomain: string;
}

/** HBONE is HTTP/2: both ends negotiate `h2` by ALPN (wire format: length-prefixed names). */
export const ALPN_H2 = "h2";
const ALPN_WIRE = Buffer.from([ALPN_H2.length, ...Buffer.from(ALPN_H2, "latin1")]);
/** Same bound as the SPIFFE validation's path length (agent/identity/validate.ts). */
const VERIFY_DEPTH = 5;

/**
 * One OpenSSL SSL_CTX per identity and certificate, used for both ends of mesh connections (server and client):
 * TLS 1.3 only, AES-128-GCM first (agent/identity/tls-policy.ts says why), the workload's chain and key, the trust
 * bundle in the context's own store, a peer certificate required both ways, ALPN h2.
 *
 * Not set, on purpose: SSL_OP_IGNORE_UNEXPECTED_EOF. With it OpenSSL 3 reports a TCP FIN without close_notify as a
 * clean end, indistinguishable from one; without it that is an "unexpected eof" error, which the connection turns
 * into a distinct, non-throwing result (TLS_EOF_UNCLEAN), so the relay can still forward the FIN but counts and logs
 * a truncated tunnel instead of calling it clean.
 *
 * Modes: ENABLE_PARTIAL_WRITE (a write returns what fit, as write(2) does) and ACCEPT_MOVING_WRITE_BUFFER (a retry
 * after a want may pass the same bytes from another Buffer, as the queue is restaged). Connections write into a
 * memory BIO (tls/connection.ts), so an SSL_write after the handshake no longer waits for the socket: these only
 * keep a retry legal should OpenSSL ever ask for a read first.
 *
 * Owner: whoever builds it calls dispose() exactly once (a rotation builds the new one first, then disposes the
 * old). Connections hold their own OpenSSL reference, so a disposed context's live connections keep working. Use a
 * context on the thread that built it (its ALPN callback is a koffi callback of that thread).
 */
export class TlsContext {
  readonly trustDomain: string;
  /** The bundle parsed once, for the SPIFFE validation of every peer. */
  readonly trustRoots: X509Certificate[];
  #ctx: SslCtxPtr | null;

  private constructor(ctx: SslCtxPtr, trustDomain: string, trustRoots: X509Certificate[]) {
    this.#ctx = ctx;
    this.trustDomain = trustDomain;
    this.trustRoots = trustRoots;
    liveTlsObjects.contexts++;
  }

  static create(opts: TlsContextOptions): TlsContext {
    let trustRoots: X509Certificate[];
    try {
      trustRoots = parseTrustBundle(opts.bundlePem);
    } catch (err) {
      throw new TlsError("tls_context", `trust bundle cannot be parsed (${(err as Error).message})`);
    }
    if (trustRoots.length === 0) throw new TlsError("tls_context", "trust bundle holds no certificate");
    errClear();
    const ctx = sslCtxNew(tlsMethod());
    if (ctx === null) throw new TlsError("tls_context", "SSL_CTX_new failed", errDrain());
    try {
      configure(ctx, opts);
    } catch (err) {
      sslCtxFree(ctx);
      throw err;
    }
    return new TlsContext(ctx, opts.trustDomain, trustRoots);
  }

  /** The SSL_CTX, for connections; throws once disposed. */
  pointer(): SslCtxPtr {
    if (this.#ctx === null) throw new TlsError("tls_closed", "TLS context used after dispose()");
    return this.#ctx;
  }

  get disposed(): boolean {
    return this.#ctx === null;
  }

  /** Drops the owner's reference; a second call does nothing. */
  dispose(): void {
    if (this.#ctx === null) return;
    sslCtxFree(this.#ctx);
    this.#ctx = null;
    liveTlsObjects.contexts--;
  }
}

function fail(what: string): never {
  throw new TlsError("tls_context", what, errDrain());
}

function configure(ctx: SslCtxPtr, opts: TlsContextOptions): void {
  if (!sslCtxSetProtoVersions(ctx, TLS1_3_VERSION, TLS1_3_VERSION)) fail("cannot restrict the context to TLS 1.3");
  if (!sslCtxSetCiphersuites(ctx, MESH_TLS.ciphers)) fail(`cipher suites refused: ${MESH_TLS.ciphers}`);
  sslCtxSetOptions(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
  sslCtxSetMode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Without read-ahead OpenSSL reads each record's 5-byte header and then its body: two read(2) per record.
  // Its buffer stays one record: SSL_CTX_set_default_read_buffer_len 64 / 128 KiB cut read(2) for 256 MiB of
  // tls-h2-bench bulk from 17,000 to 8,660 / 4,570 but not CPU (1 GiB, medians of 5: 1.34 / 1.36 s against 1.34 s),
  // and every connection would keep 48-112 KiB more for as long as it lives.
  sslCtxSetReadAhead(ctx, true);

  const chain = pemCertificates(opts.chainPem);
  try {
    const [leaf, ...intermediates] = chain;
    if (leaf === undefined) fail("certificate chain holds no certificate");
    if (!sslCtxUseCertificate(ctx, leaf)) fail("certificate refused");
    for (const x of intermediates) if (!sslCtxAdd1ChainCert(ctx, x)) fail("intermediate certificate refused");
  } finally {
    for (const x of chain) x509Free(x);
  }
  const key = pemPrivateKey(opts.keyPem);
  if (key === null) fail("private key cannot be parsed");
  try {
    if (!sslCtxUsePrivateKey(ctx, key)) fail("private key refused");
  } finally {
    evpPkeyFree(key);
  }
  if (!sslCtxCheckPrivateKey(ctx)) fail("private key does not match the certificate");

  const roots = pemCertificates(opts.bundlePem);
  try {
    if (roots.length === 0) fail("trust bundle holds no certificate");
    for (const x of roots) if (!sslCtxAddTrustedCert(ctx, x)) fail("trust bundle certificate refused");
  } finally {
    for (const x of roots) x509Free(x);
  }
  // Servers demand a client certificate; clients always verify the server's (FAIL_IF_NO_PEER_CERT is server-only).
  sslCtxSetVerify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, VERIFY_DEPTH);
  if (!sslCtxSetAlpnProtos(ctx, ALPN_WIRE)) fail("ALPN protocols refused");
  sslCtxSelectAlpn(ctx, ALPN_H2);
}
