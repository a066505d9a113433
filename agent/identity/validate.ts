import { X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";
import { IdentityError } from "./errors.js";
import { splitPemCertificates } from "./pem.js";
import { parseSubjectAltName } from "./san.js";
import { parseSpiffeId, type SpiffeId } from "./spiffe.js";

/** Why a peer was refused; stable, used as a metric label. */
export type PeerRejectReason =
  | "no_certificate"
  | "unknown_ca" // does not chain to the trust bundle (foreign CA, self-signed, bad signature)
  | "expired"
  | "not_yet_valid"
  | "bad_san" // not exactly one SPIFFE URI SAN, or a malformed one
  | "wrong_trust_domain"
  | "bad_usage" // a CA certificate used as a leaf, or an extended key usage that forbids this role
  | "invalid_certificate"; // any other verification failure OpenSSL reports (detail holds its code)

export type PeerValidation = { ok: true; id: SpiffeId } | { ok: false; reason: PeerRejectReason; detail: string };

export interface PeerValidationOptions {
  trustDomain: string;
  /** Trusted roots: PEM, or certificates parsed once with `parseTrustBundle` (cheaper per handshake). */
  trustBundle: string | X509Certificate[];
  /** The peer's role: a "client" certificate must allow clientAuth, a "server" one serverAuth. */
  peerRole?: "client" | "server";
  now?: number;
}

const EKU = { client: "1.3.6.1.5.5.7.3.2", server: "1.3.6.1.5.5.7.3.1" };
const MAX_CHAIN = 5;

function reject(reason: PeerRejectReason, detail: string): PeerValidation {
  return { ok: false, reason, detail };
}

export function parseTrustBundle(pem: string): X509Certificate[] {
  return splitPemCertificates(pem).map((p) => new X509Certificate(p));
}

function issues(parent: X509Certificate, child: X509Certificate): boolean {
  return child.checkIssued(parent) && child.verify(parent.publicKey);
}

function timeCheck(cert: X509Certificate, now: number): PeerValidation | undefined {
  if (now < Date.parse(cert.validFrom)) return reject("not_yet_valid", `valid from ${cert.validFrom}`);
  if (now > Date.parse(cert.validTo)) return reject("expired", `expired ${cert.validTo}`);
  return undefined;
}

/** Exactly one SAN, a URI, parseable as a SPIFFE ID of our trust domain. */
export function spiffeIdOfLeaf(leaf: X509Certificate, trustDomain: string): PeerValidation {
  let sans: ReturnType<typeof parseSubjectAltName>;
  try {
    sans = parseSubjectAltName(leaf.subjectAltName);
  } catch (err) {
    return reject("bad_san", (err as Error).message);
  }
  const uris = sans.filter((s) => s.type === "URI");
  if (uris.length !== 1 || sans.length !== 1) {
    return reject("bad_san", `expected one URI SAN, got ${JSON.stringify(leaf.subjectAltName ?? "")}`);
  }
  let id: SpiffeId;
  try {
    id = parseSpiffeId((uris[0] as { value: string }).value);
  } catch (err) {
    return reject("bad_san", err instanceof IdentityError ? err.message : String(err));
  }
  if (id.trustDomain !== trustDomain) {
    return reject("wrong_trust_domain", `trust domain ${id.trustDomain}, expected ${trustDomain}`);
  }
  return { ok: true, id };
}

/**
 * Pure validation of a presented chain (leaf first) against the trust bundle at time `now`: the path is built from
 * the presented intermediates to a bundle root, every signature and validity period is checked, then the leaf's
 * SAN is parsed. Same order as OpenSSL (chain, then time, then name), so both paths report the same reason.
 */
export function validatePeerChain(
  chain: ReadonlyArray<string | Buffer | X509Certificate>,
  opts: PeerValidationOptions,
): PeerValidation {
  const now = opts.now ?? Date.now();
  let certs: X509Certificate[];
  let roots: X509Certificate[];
  try {
    certs = chain.map((c) => (c instanceof X509Certificate ? c : new X509Certificate(c)));
    roots = typeof opts.trustBundle === "string" ? parseTrustBundle(opts.trustBundle) : opts.trustBundle;
  } catch (err) {
    return reject("invalid_certificate", `unparseable certificate: ${(err as Error).message}`);
  }
  const leaf = certs[0];
  if (!leaf) return reject("no_certificate", "peer presented no certificate");

  const path = [leaf];
  for (let current = leaf; ; ) {
    const root = roots.find((r) => issues(r, current));
    if (root) {
      if (!root.fingerprint256 || root.fingerprint256 !== current.fingerprint256) path.push(root);
      break;
    }
    // A self-signed peer cert that is not in the bundle never gains trust by signing itself.
    const next = certs.slice(1).find((c) => c.ca && c !== current && !path.includes(c) && issues(c, current));
    if (!next || path.length >= MAX_CHAIN) {
      return reject("unknown_ca", `no path from ${current.issuer.replace(/\n/g, ",")} to the trust bundle`);
    }
    path.push(next);
    current = next;
  }
  for (const cert of path) {
    const bad = timeCheck(cert, now);
    if (bad) return bad;
  }
  if (leaf.ca) return reject("bad_usage", "peer presented a CA certificate as its own");
  if (opts.peerRole && leaf.keyUsage && !leaf.keyUsage.includes(EKU[opts.peerRole])) {
    return reject("bad_usage", `extended key usage does not allow ${opts.peerRole} authentication`);
  }
  return spiffeIdOfLeaf(leaf, opts.trustDomain);
}

const OPENSSL_REASONS: Record<string, PeerRejectReason> = {
  CERT_HAS_EXPIRED: "expired",
  CERT_NOT_YET_VALID: "not_yet_valid",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "unknown_ca",
  UNABLE_TO_GET_ISSUER_CERT: "unknown_ca",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "unknown_ca",
  SELF_SIGNED_CERT_IN_CHAIN: "unknown_ca",
  DEPTH_ZERO_SELF_SIGNED_CERT: "unknown_ca",
  CERT_SIGNATURE_FAILURE: "unknown_ca",
  CERT_UNTRUSTED: "unknown_ca",
  CERT_REJECTED: "unknown_ca",
  INVALID_PURPOSE: "bad_usage",
  INVALID_CA: "bad_usage",
};

/** DERs of the chain the peer presented, leaf first (Node links them via issuerCertificate; a root links itself). */
function peerChain(socket: TLSSocket): Buffer[] {
  const ders: Buffer[] = [];
  let cert = socket.getPeerCertificate(true);
  while (cert?.raw && ders.length < MAX_CHAIN + 1) {
    ders.push(cert.raw);
    const next = cert.issuerCertificate;
    if (!next || next === cert || next.fingerprint256 === cert.fingerprint256) break;
    cert = next;
  }
  return ders;
}

/**
 * For a live socket after the handshake (servers: requestCert + rejectUnauthorized:false). OpenSSL's verdict, when
 * Node recorded one, is mapped first; the presented chain is then re-validated in full, because a server-side
 * TLSSocket built directly (not via tls.Server, as a proxy choosing a SecureContext per connection does) never
 * records OpenSSL's verdict in `authorizationError`.
 */
export function validateTlsPeer(socket: TLSSocket, opts: PeerValidationOptions): PeerValidation {
  const chain = peerChain(socket);
  if (chain.length === 0) return reject("no_certificate", "peer presented no certificate");
  const code = socket.authorizationError as unknown as string | Error | null | undefined;
  const name = typeof code === "string" ? code : ((code as NodeJS.ErrnoException | null)?.code ?? code?.message);
  // Hostname checks do not apply to SPIFFE certificates (the SAN check below replaces them); Node only reports
  // this code on clients once the chain itself verified, which is re-checked below anyway.
  if (name && name !== "ERR_TLS_CERT_ALTNAME_INVALID") {
    return reject(OPENSSL_REASONS[name] ?? "invalid_certificate", name);
  }
  return validatePeerChain(chain, opts);
}
