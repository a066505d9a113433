import { AmbitError } from "../../errors.js";

/** Stable reasons a TLS operation of the data path fails; metric labels, so they never change meaning. */
export type TlsErrorCode =
  | "tls_context" // a context could not be built: bad PEM, key not matching the certificate, OpenSSL refused a setting
  | "tls_handshake" // the handshake failed: OpenSSL's reason (peer refused, bad certificate, protocol) in `reasons`
  | "tls_protocol" // a record-layer failure after the handshake (bad record, alert from the peer)
  | "tls_io" // the socket itself failed under TLS (ECONNRESET, EPIPE): `errno` holds it
  | "tls_timeout" // the handshake did not finish in time, or the peer did not close after our close_notify
  | "tls_closed"; // the connection was used after free()

/**
 * A TLS failure of OpenSSL bound through koffi. `reasons` is OpenSSL's error queue for this failure (drained, so
 * nothing leaks into the next call or into Node's own crypto on the same thread), `errno` the socket's errno when
 * the failure was a system call's.
 */
export class TlsError extends AmbitError {
  declare readonly code: TlsErrorCode;
  readonly reasons: readonly string[];
  readonly errno: number;

  constructor(code: TlsErrorCode, message: string, reasons: readonly string[] = [], errno = 0) {
    super(code, reasons.length > 0 ? `${message}: ${reasons.join("; ")}` : message);
    this.reasons = reasons;
    this.errno = errno;
  }
}

/**
 * The handshake result a failed TLS handshake is reported as (metric label), named where OpenSSL says which it was:
 * a client that sent no certificate is `no_certificate`, a chain that does not verify against the bundle
 * `unknown_ca` (OpenSSL checks chains inside the handshake); a slow peer is `timeout`; anything else `tls_error`.
 */
export function handshakeFailure(err: unknown): "timeout" | "no_certificate" | "unknown_ca" | "tls_error" {
  if (!(err instanceof TlsError)) return "tls_error";
  if (err.code === "tls_timeout") return "timeout";
  if (err.reasons.some((r) => r.includes("peer did not return a certificate"))) return "no_certificate";
  if (err.reasons.some((r) => r.includes("certificate verify failed"))) return "unknown_ca";
  return "tls_error";
}
