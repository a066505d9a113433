import koffi from "koffi";

/**
 * Node's own OpenSSL (3.0.x, statically linked into the `node` executable and exported from it), bound from the
 * running process: `koffi.load(null)` is dlopen(NULL), the main program, so no second libssl is loaded and the
 * version is process.versions.openssl. (`koffi.load(process.execPath)` fails: "cannot dynamically load executable".)
 *
 * Declarations and thin typed wrappers only. Pointers are koffi 3 BigInts (null for NULL) and carry no C type: a
 * pointer passed to the wrong function is a segfault, not an exception, so every signature below is the exact one
 * from OpenSSL 3.0's headers, and the wrappers take the opaque types by name to keep them apart in TypeScript.
 */
const lib = koffi.load(null);

export type SslCtxPtr = bigint & { readonly __brand: "SSL_CTX" };
export type SslPtr = bigint & { readonly __brand: "SSL" };
export type X509Ptr = bigint & { readonly __brand: "X509" };
export type EvpPkeyPtr = bigint & { readonly __brand: "EVP_PKEY" };
type BioPtr = bigint & { readonly __brand: "BIO" };
/** A memory BIO owned by an SSL object (SSL_set0_wbio): valid until that SSL is freed, never freed on its own. */
export type SslWriteBioPtr = bigint & { readonly __brand: "SSL write BIO" };
type StackPtr = bigint & { readonly __brand: "STACK" };
type X509StorePtr = bigint & { readonly __brand: "X509_STORE" };

// ALPN select callback: int (*)(SSL *ssl, const unsigned char **out, unsigned char *outlen,
//                                const unsigned char *in, unsigned int inlen, void *arg)
const AlpnSelectCb = koffi.proto(
  "int ambit_alpn_select_cb(void *ssl, void *out, void *outlen, const void *inp, unsigned int inlen, void *arg)",
);

const raw = {
  OpenSSL_version: lib.func("const char *OpenSSL_version(int type)"),
  TLS_method: lib.func("const void *TLS_method(void)"),
  SSL_CTX_new: lib.func("void *SSL_CTX_new(const void *method)"),
  SSL_CTX_free: lib.func("void SSL_CTX_free(void *ctx)"),
  SSL_CTX_ctrl: lib.func("long SSL_CTX_ctrl(void *ctx, int cmd, long larg, void *parg)"),
  SSL_CTX_set_options: lib.func("uint64_t SSL_CTX_set_options(void *ctx, uint64_t op)"),
  SSL_CTX_set_ciphersuites: lib.func("int SSL_CTX_set_ciphersuites(void *ctx, const char *str)"),
  SSL_CTX_use_certificate: lib.func("int SSL_CTX_use_certificate(void *ctx, void *x)"),
  SSL_CTX_use_PrivateKey: lib.func("int SSL_CTX_use_PrivateKey(void *ctx, void *pkey)"),
  SSL_CTX_check_private_key: lib.func("int SSL_CTX_check_private_key(const void *ctx)"),
  SSL_CTX_get_cert_store: lib.func("void *SSL_CTX_get_cert_store(const void *ctx)"),
  X509_STORE_add_cert: lib.func("int X509_STORE_add_cert(void *store, void *x)"),
  SSL_CTX_set_verify: lib.func("void SSL_CTX_set_verify(void *ctx, int mode, void *verify_callback)"),
  SSL_CTX_set_verify_depth: lib.func("void SSL_CTX_set_verify_depth(void *ctx, int depth)"),
  SSL_CTX_set_alpn_protos: lib.func("int SSL_CTX_set_alpn_protos(void *ctx, const void *protos, unsigned int len)"),
  SSL_CTX_set_alpn_select_cb: lib.func(
    "void SSL_CTX_set_alpn_select_cb(void *ctx, ambit_alpn_select_cb *cb, void *arg)",
  ),
  SSL_new: lib.func("void *SSL_new(void *ctx)"),
  SSL_free: lib.func("void SSL_free(void *ssl)"),
  SSL_set_rfd: lib.func("int SSL_set_rfd(void *ssl, int fd)"),
  SSL_set0_wbio: lib.func("void SSL_set0_wbio(void *ssl, void *wbio)"),
  SSL_set_accept_state: lib.func("void SSL_set_accept_state(void *ssl)"),
  SSL_set_connect_state: lib.func("void SSL_set_connect_state(void *ssl)"),
  SSL_do_handshake: lib.func("int SSL_do_handshake(void *ssl)"),
  SSL_read_ex: lib.func("int SSL_read_ex(void *ssl, void *buf, size_t num, void *readbytes)"),
  SSL_write_ex: lib.func("int SSL_write_ex(void *ssl, const void *buf, size_t num, void *written)"),
  SSL_get_error: lib.func("int SSL_get_error(const void *ssl, int ret)"),
  SSL_shutdown: lib.func("int SSL_shutdown(void *ssl)"),
  SSL_get1_peer_certificate: lib.func("void *SSL_get1_peer_certificate(const void *ssl)"),
  SSL_get_peer_cert_chain: lib.func("void *SSL_get_peer_cert_chain(const void *ssl)"),
  SSL_get0_alpn_selected: lib.func("void SSL_get0_alpn_selected(const void *ssl, void *data, void *len)"),
  SSL_get_verify_result: lib.func("long SSL_get_verify_result(const void *ssl)"),
  SSL_session_reused: lib.func("int SSL_session_reused(const void *ssl)"),
  SSL_has_pending: lib.func("int SSL_has_pending(const void *ssl)"),
  OPENSSL_sk_num: lib.func("int OPENSSL_sk_num(const void *stack)"),
  OPENSSL_sk_value: lib.func("void *OPENSSL_sk_value(const void *stack, int i)"),
  i2d_X509: lib.func("int i2d_X509(const void *x, void *out)"),
  X509_free: lib.func("void X509_free(void *x)"),
  CRYPTO_free: lib.func("void CRYPTO_free(void *ptr, const char *file, int line)"),
  BIO_new_mem_buf: lib.func("void *BIO_new_mem_buf(const void *buf, int len)"),
  BIO_s_mem: lib.func("const void *BIO_s_mem(void)"),
  BIO_new: lib.func("void *BIO_new(const void *type)"),
  BIO_read: lib.func("int BIO_read(void *bio, void *data, int dlen)"),
  BIO_free: lib.func("int BIO_free(void *bio)"),
  PEM_read_bio_X509: lib.func("void *PEM_read_bio_X509(void *bio, void *x, void *cb, void *u)"),
  PEM_read_bio_PrivateKey: lib.func("void *PEM_read_bio_PrivateKey(void *bio, void *x, void *cb, void *u)"),
  EVP_PKEY_free: lib.func("void EVP_PKEY_free(void *pkey)"),
  ERR_get_error: lib.func("unsigned long ERR_get_error(void)"),
  ERR_peek_error: lib.func("unsigned long ERR_peek_error(void)"),
  ERR_error_string_n: lib.func("void ERR_error_string_n(unsigned long e, void *buf, size_t len)"),
  ERR_clear_error: lib.func("void ERR_clear_error(void)"),
};

export const TLS1_3_VERSION = 0x0304;
const SSL_CTRL_MODE = 33;
const SSL_CTRL_SET_READ_AHEAD = 41;
const SSL_CTRL_CHAIN_CERT = 89;
const SSL_CTRL_SET_MIN_PROTO_VERSION = 123;
const SSL_CTRL_SET_MAX_PROTO_VERSION = 124;

export const SSL_MODE_ENABLE_PARTIAL_WRITE = 0x1;
export const SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER = 0x2;
export const SSL_MODE_RELEASE_BUFFERS = 0x10;
export const SSL_OP_IGNORE_UNEXPECTED_EOF = 1n << 7n;
export const SSL_OP_NO_COMPRESSION = 1n << 17n;
export const SSL_OP_CIPHER_SERVER_PREFERENCE = 1n << 22n;
export const SSL_OP_NO_RENEGOTIATION = 1n << 30n;
export const SSL_VERIFY_PEER = 0x01;
export const SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0x02;

export const SSL_ERROR_NONE = 0;
export const SSL_ERROR_SSL = 1;
export const SSL_ERROR_WANT_READ = 2;
export const SSL_ERROR_WANT_WRITE = 3;
export const SSL_ERROR_SYSCALL = 5;
export const SSL_ERROR_ZERO_RETURN = 6;

export const X509_V_OK = 0;
const ERR_LIB_SSL = 20;
const ERR_SYSTEM_FLAG = 0x80000000;
/** SSL_R_UNEXPECTED_EOF_WHILE_READING: the peer closed TCP without a close_notify (OpenSSL 3). */
export const SSL_R_UNEXPECTED_EOF_WHILE_READING = 294;

export function opensslVersion(): string {
  return raw.OpenSSL_version(0) as string;
}

export function tlsMethod(): bigint {
  return raw.TLS_method() as bigint;
}

export function sslCtxNew(method: bigint): SslCtxPtr | null {
  return raw.SSL_CTX_new(method) as SslCtxPtr | null;
}

export function sslCtxFree(ctx: SslCtxPtr): void {
  raw.SSL_CTX_free(ctx);
}

/** SSL_CTX_set_min_proto_version / max: macros over SSL_CTX_ctrl. 1 on success. */
export function sslCtxSetProtoVersions(ctx: SslCtxPtr, min: number, max: number): boolean {
  return (
    Number(raw.SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, min, null)) === 1 &&
    Number(raw.SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MAX_PROTO_VERSION, max, null)) === 1
  );
}

/** SSL_CTX_set_mode (a macro over SSL_CTX_ctrl): adds `mode` bits, returns the new mode. */
export function sslCtxSetMode(ctx: SslCtxPtr, mode: number): number {
  return Number(raw.SSL_CTX_ctrl(ctx, SSL_CTRL_MODE, mode, null));
}

/** SSL_CTX_set_read_ahead (a macro over SSL_CTX_ctrl): read whole socket buffers, not one record at a time. */
export function sslCtxSetReadAhead(ctx: SslCtxPtr, on: boolean): void {
  raw.SSL_CTX_ctrl(ctx, SSL_CTRL_SET_READ_AHEAD, on ? 1 : 0, null);
}

/** SSL_CTX_set_options takes and returns a uint64_t in OpenSSL 3 (bits above 31 are used). */
export function sslCtxSetOptions(ctx: SslCtxPtr, options: bigint): bigint {
  return BigInt(raw.SSL_CTX_set_options(ctx, options));
}

export function sslCtxSetCiphersuites(ctx: SslCtxPtr, suites: string): boolean {
  return raw.SSL_CTX_set_ciphersuites(ctx, suites) === 1;
}

/** Takes its own reference: the caller still frees `x`. */
export function sslCtxUseCertificate(ctx: SslCtxPtr, x: X509Ptr): boolean {
  return raw.SSL_CTX_use_certificate(ctx, x) === 1;
}

/** SSL_CTX_add1_chain_cert (SSL_CTX_ctrl with larg 1): takes its own reference, the caller still frees `x`. */
export function sslCtxAdd1ChainCert(ctx: SslCtxPtr, x: X509Ptr): boolean {
  return Number(raw.SSL_CTX_ctrl(ctx, SSL_CTRL_CHAIN_CERT, 1, x)) === 1;
}

/** Takes its own reference: the caller still frees `pkey`. */
export function sslCtxUsePrivateKey(ctx: SslCtxPtr, pkey: EvpPkeyPtr): boolean {
  return raw.SSL_CTX_use_PrivateKey(ctx, pkey) === 1;
}

export function sslCtxCheckPrivateKey(ctx: SslCtxPtr): boolean {
  return raw.SSL_CTX_check_private_key(ctx) === 1;
}

/** Adds a trusted root to the context's own store (owned by the context); the store takes its own reference. */
export function sslCtxAddTrustedCert(ctx: SslCtxPtr, x: X509Ptr): boolean {
  const store = raw.SSL_CTX_get_cert_store(ctx) as X509StorePtr | null;
  return store !== null && raw.X509_STORE_add_cert(store, x) === 1;
}

/** No verify callback: OpenSSL's own chain verification against the context's store decides. */
export function sslCtxSetVerify(ctx: SslCtxPtr, mode: number, depth: number): void {
  raw.SSL_CTX_set_verify(ctx, mode, null);
  raw.SSL_CTX_set_verify_depth(ctx, depth);
}

/** The ALPN list a client offers, in wire format (length-prefixed names). Note: returns 0 on SUCCESS. */
export function sslCtxSetAlpnProtos(ctx: SslCtxPtr, wire: Buffer): boolean {
  return raw.SSL_CTX_set_alpn_protos(ctx, wire, wire.length) === 0;
}

const SSL_TLSEXT_ERR_OK = 0;
const SSL_TLSEXT_ERR_ALERT_FATAL = 2;
let alpnWanted = "";
let alpnSelectCb: bigint | undefined;

/**
 * Server side: select `protocol` from the client's ALPN list, or end the handshake with a fatal
 * no_application_protocol alert when the client offers a list without it (a client that sends no ALPN at all is
 * not asked; the connection can check alpnSelected()). The callback runs synchronously inside SSL_do_handshake, on
 * the calling thread; it points `*out` into the client's own list (valid for the callback, OpenSSL copies it).
 * koffi callbacks belong to the thread (isolate) that registered them: use a context in the thread that made it.
 * One protocol per thread, registered once and never unregistered (contexts may outlive any one owner).
 */
export function sslCtxSelectAlpn(ctx: SslCtxPtr, protocol: string): void {
  if (alpnSelectCb === undefined) {
    alpnWanted = protocol;
    alpnSelectCb = koffi.register(
      (_ssl: bigint, out: bigint, outlen: bigint, inp: bigint, inlen: number, _arg: bigint) => {
        if (inlen === 0) return SSL_TLSEXT_ERR_ALERT_FATAL;
        const list = Buffer.from(koffi.view(inp, inlen));
        for (let i = 0; i < list.length; ) {
          const len = list[i] as number;
          if (i + 1 + len > list.length) break;
          if (list.toString("latin1", i + 1, i + 1 + len) === alpnWanted) {
            koffi.encode(out, "void *", inp + BigInt(i + 1));
            koffi.encode(outlen, "uint8_t", len);
            return SSL_TLSEXT_ERR_OK;
          }
          i += 1 + len;
        }
        return SSL_TLSEXT_ERR_ALERT_FATAL;
      },
      koffi.pointer(AlpnSelectCb),
    );
  } else if (protocol !== alpnWanted) {
    throw new Error(`ALPN select callback is registered for ${alpnWanted}, not ${protocol}`);
  }
  raw.SSL_CTX_set_alpn_select_cb(ctx, alpnSelectCb, null);
}

/** SSL_new takes a reference on the context: freeing the context while connections live is safe. */
export function sslNew(ctx: SslCtxPtr): SslPtr | null {
  return raw.SSL_new(ctx) as SslPtr | null;
}

export function sslFree(ssl: SslPtr): void {
  raw.SSL_free(ssl);
}

/**
 * Reads from the fd through a socket BIO (BIO_NOCLOSE: SSL_free never closes the fd) and writes into a new memory
 * BIO, whose contents the caller takes out with bioRead and writes to the socket itself. SSL_set0_wbio gives the
 * memory BIO to the SSL object (freed by SSL_free): the pointer returned is borrowed. Null when either step failed
 * (the SSL object then owns whatever was set; SSL_free releases it).
 */
export function sslSetReadFdWriteMemory(ssl: SslPtr, fd: number): SslWriteBioPtr | null {
  if (raw.SSL_set_rfd(ssl, fd) !== 1) return null;
  const bio = raw.BIO_new(raw.BIO_s_mem()) as SslWriteBioPtr | null;
  if (bio === null) return null;
  raw.SSL_set0_wbio(ssl, bio);
  return bio;
}

/**
 * Takes up to `length` bytes out of a memory BIO into `buf` (from its start): the count, or 0 or less when it is
 * empty (an empty memory BIO says -1 with its retry flag set).
 */
export function bioRead(bio: SslWriteBioPtr, buf: Buffer, length: number): number {
  checkLength(buf, length);
  return raw.BIO_read(bio, buf, length) as number;
}

export function sslSetAcceptState(ssl: SslPtr): void {
  raw.SSL_set_accept_state(ssl);
}

export function sslSetConnectState(ssl: SslPtr): void {
  raw.SSL_set_connect_state(ssl);
}

export function sslDoHandshake(ssl: SslPtr): number {
  return raw.SSL_do_handshake(ssl) as number;
}

/** OpenSSL trusts the length it is given: one past the Buffer is a write (or read) into someone else's memory. */
function checkLength(buf: Buffer, length: number): void {
  if (!(length >= 0 && length <= buf.length))
    throw new RangeError(`length ${length} outside a ${buf.length}-byte buffer`);
}

/**
 * SSL_read_ex into `buf` (from its start, up to `length`); 1 on success with the count in `count` (an 8-byte
 * size_t out buffer, read as its low 32 bits: a read is never near 4 GiB), else 0.
 */
export function sslReadEx(ssl: SslPtr, buf: Buffer, length: number, count: Buffer): number {
  checkLength(buf, length);
  return raw.SSL_read_ex(ssl, buf, length, count) as number;
}

/** SSL_write_ex of `length` bytes from the start of `buf`; 1 on success with the count in `count`, else 0. */
export function sslWriteEx(ssl: SslPtr, buf: Buffer, length: number, count: Buffer): number {
  checkLength(buf, length);
  return raw.SSL_write_ex(ssl, buf, length, count) as number;
}

export function sslGetError(ssl: SslPtr, ret: number): number {
  return raw.SSL_get_error(ssl, ret) as number;
}

export function sslShutdown(ssl: SslPtr): number {
  return raw.SSL_shutdown(ssl) as number;
}

/** The peer's leaf certificate with a new reference (caller X509_frees it), or null. */
export function sslGet1PeerCertificate(ssl: SslPtr): X509Ptr | null {
  return raw.SSL_get1_peer_certificate(ssl) as X509Ptr | null;
}

/**
 * The certificates the peer sent, borrowed (freed with the SSL). A client's list starts with the server's leaf; a
 * server's list holds the client's intermediates only (OpenSSL's long-standing asymmetry).
 */
export function sslPeerCertChain(ssl: SslPtr): X509Ptr[] {
  const stack = raw.SSL_get_peer_cert_chain(ssl) as StackPtr | null;
  if (stack === null) return [];
  const n = raw.OPENSSL_sk_num(stack) as number;
  const certs: X509Ptr[] = [];
  for (let i = 0; i < n; i++) certs.push(raw.OPENSSL_sk_value(stack, i) as X509Ptr);
  return certs;
}

const alpnData = Buffer.alloc(8);
const alpnLen = Buffer.alloc(4);

/** The negotiated ALPN protocol, or "" when none was. */
export function sslAlpnSelected(ssl: SslPtr): string {
  alpnData.fill(0);
  alpnLen.fill(0);
  raw.SSL_get0_alpn_selected(ssl, alpnData, alpnLen);
  const len = alpnLen.readUInt32LE(0);
  const ptr = alpnData.readBigUInt64LE(0);
  return len === 0 || ptr === 0n ? "" : Buffer.from(koffi.view(ptr, len)).toString("latin1");
}

export function sslGetVerifyResult(ssl: SslPtr): number {
  return Number(raw.SSL_get_verify_result(ssl));
}

/** True when OpenSSL holds bytes (decrypted or not) that a read would return without touching the socket. */
export function sslHasPending(ssl: SslPtr): boolean {
  return raw.SSL_has_pending(ssl) === 1;
}

export function sslSessionReused(ssl: SslPtr): boolean {
  return raw.SSL_session_reused(ssl) === 1;
}

const derOut = Buffer.alloc(8);

/** DER of a certificate: i2d_X509 allocates it (OPENSSL_malloc) when *out is NULL; copied, then CRYPTO_free'd. */
export function x509Der(x: X509Ptr): Buffer {
  derOut.fill(0);
  const len = raw.i2d_X509(x, derOut) as number;
  const ptr = derOut.readBigUInt64LE(0);
  if (len <= 0 || ptr === 0n) return Buffer.alloc(0);
  const der = Buffer.from(Buffer.from(koffi.view(ptr, len)));
  raw.CRYPTO_free(ptr, null, 0);
  return der;
}

export function x509Free(x: X509Ptr): void {
  raw.X509_free(x);
}

/** Every certificate in a PEM text, in order (each owned by the caller: x509Free). Stops at the first non-PEM. */
export function pemCertificates(pem: string): X509Ptr[] {
  const text = Buffer.from(pem, "latin1");
  const bio = raw.BIO_new_mem_buf(text, text.length) as BioPtr | null;
  if (bio === null) return [];
  const certs: X509Ptr[] = [];
  try {
    for (;;) {
      const x = raw.PEM_read_bio_X509(bio, null, null, null) as X509Ptr | null;
      if (x === null) break;
      certs.push(x);
    }
  } finally {
    raw.BIO_free(bio);
  }
  // Reading until no certificate is left always ends with a "no start line" error: not a failure.
  raw.ERR_clear_error();
  return certs;
}

/** The first private key in a PEM text (owned by the caller: evpPkeyFree), or null. */
export function pemPrivateKey(pem: string): EvpPkeyPtr | null {
  const text = Buffer.from(pem, "latin1");
  const bio = raw.BIO_new_mem_buf(text, text.length) as BioPtr | null;
  if (bio === null) return null;
  try {
    return raw.PEM_read_bio_PrivateKey(bio, null, null, null) as EvpPkeyPtr | null;
  } finally {
    raw.BIO_free(bio);
  }
}

export function evpPkeyFree(pkey: EvpPkeyPtr): void {
  raw.EVP_PKEY_free(pkey);
}

export function errClear(): void {
  raw.ERR_clear_error();
}

/** True when the oldest queued error is OpenSSL's "unexpected eof while reading" (SSL library). */
export function errIsUnexpectedEof(): boolean {
  const e = Number(raw.ERR_peek_error());
  if (e === 0 || (e & ERR_SYSTEM_FLAG) !== 0) return false;
  return (e >>> 23) % 256 === ERR_LIB_SSL && (e & 0x7fffff) === SSL_R_UNEXPECTED_EOF_WHILE_READING;
}

const errText = Buffer.alloc(256);

/** Empties this thread's error queue (shared with Node's crypto on the main thread); returns its messages. */
export function errDrain(max = 16): string[] {
  const messages: string[] = [];
  for (;;) {
    const e = raw.ERR_get_error();
    if (!e) break;
    if (messages.length < max) {
      raw.ERR_error_string_n(e, errText, errText.length);
      messages.push(errText.toString("latin1", 0, errText.indexOf(0)));
    }
  }
  return messages;
}
