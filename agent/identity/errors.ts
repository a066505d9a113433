import { AmbitError } from "../errors.js";

/**
 * Stable reasons an identity operation fails. They are metric labels and the `code` of the CA's JSON error
 * responses, so they never change meaning once shipped.
 */
export type IdentityErrorCode =
  | "bad_san" // a SPIFFE ID (or a certificate's SAN) is malformed
  | "bad_csr" // a CSR cannot be parsed or uses an unsupported key/algorithm
  | "csr_signature" // the CSR's signature does not verify with its own key: no proof of key possession
  | "csr_mismatch" // the CSR asks for a subject, SAN or extension other than the single expected SPIFFE URI
  | "unauthenticated" // missing or unknown bearer token
  | "forbidden" // the caller's node may not obtain this identity
  | "bad_request" // a request body that is not the expected JSON
  | "body_too_large"
  | "token_review_failed" // the token reviewer itself could not answer (API server down, bad response)
  | "token_review_busy" // the CA has too many token reviews running and waiting (503 with Retry-After)
  | "rate_limited" // too many uncached token reviews from the caller's source address (429 with Retry-After)
  | "ca_unavailable" // the CA could not be reached or answered with something unusable
  | "ca_refused" // the CA answered with a refusal
  | "ca_files" // the CA's key/certificate files are missing, unreadable or inconsistent
  | "keygen" // native key generation failed
  | "closed"; // the certificate manager was closed while the operation was pending

export class IdentityError extends AmbitError {
  declare readonly code: IdentityErrorCode;

  constructor(code: IdentityErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** Why a CSR is bad_csr: stable, finer than the code; the CA answers it as `reason`. */
export type CsrRefusal =
  | "malformed" // not a PEM PKCS#10 request that parses
  | "too_large" // over the CA's size limit, not parsed at all
  | "key_type" // a key other than RSA (EC, Ed25519, DSA, RSASSA-PSS, an unknown algorithm)
  | "key_size" // an RSA modulus outside 2048..4096 bits
  | "key_exponent" // an RSA public exponent other than 65537
  | "signature_algorithm"; // signed with anything but RSA PKCS#1 v1.5 and SHA-256/384/512

/** A CSR the CA will not look at further (code bad_csr), with the reason. */
export class CsrError extends IdentityError {
  readonly reason: CsrRefusal;

  constructor(reason: CsrRefusal, message: string, options?: { cause?: unknown }) {
    super("bad_csr", message, options);
    this.reason = reason;
  }
}

/**
 * A refusal or failure reported by a remote CA; `status` is the HTTP status (0 when no response arrived), and
 * `retryAfterMs` what its Retry-After header asked for, if anything.
 */
export class CaRequestError extends IdentityError {
  readonly status: number;
  readonly retryAfterMs: number | undefined;

  constructor(
    code: IdentityErrorCode,
    status: number,
    message: string,
    options?: { cause?: unknown; retryAfterMs?: number },
  ) {
    super(code, message, options);
    this.status = status;
    this.retryAfterMs = options?.retryAfterMs;
  }
}
