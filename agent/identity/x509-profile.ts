import { randomBytes } from "node:crypto";
import forge from "node-forge";

/**
 * What ambit's certificates look like. Pure construction (apart from the random serial): the CA signs what these
 * functions build, and never copies anything from a CSR.
 */

export const DEFAULT_LEAF_LIFETIME_SEC = 24 * 3600;
export const CA_LIFETIME_SEC = 10 * 365 * 24 * 3600;
/** Tolerance for clocks that lag the CA's: a peer a little behind must not see a fresh cert as not-yet-valid. */
export const MAX_BACKDATE_SEC = 60;

const SAN_URI = 6;
const SAN_DNS = 2;
const SAN_IP = 7;

export interface ValidityWindow {
  notBefore: Date;
  notAfter: Date;
}

/**
 * notAfter = now + lifetime, so the certificate lives the full configured lifetime from issuance. notBefore is
 * backdated by min(60 s, lifetime): a 24 h certificate gets the whole minute of skew tolerance, while a 3 s test
 * certificate is not backdated so far that its validity is mostly in the past. The window never leaves the
 * issuer's own (a leaf outliving its CA would fail verification anyway, later and more confusingly).
 * X.509 times have one-second resolution, so everything is truncated to whole seconds.
 */
export function validityWindow(nowMs: number, lifetimeSec: number, issuer?: ValidityWindow): ValidityWindow {
  if (!Number.isFinite(lifetimeSec) || lifetimeSec < 1) throw new RangeError(`lifetime must be >= 1 s: ${lifetimeSec}`);
  const nowSec = Math.floor(nowMs / 1000);
  let notBefore = nowSec - Math.min(MAX_BACKDATE_SEC, Math.floor(lifetimeSec));
  let notAfter = nowSec + Math.floor(lifetimeSec);
  if (issuer) {
    notBefore = Math.max(notBefore, Math.ceil(issuer.notBefore.getTime() / 1000));
    notAfter = Math.min(notAfter, Math.floor(issuer.notAfter.getTime() / 1000));
  }
  return { notBefore: new Date(notBefore * 1000), notAfter: new Date(notAfter * 1000) };
}

/** 16 random bytes, top bit cleared (DER INTEGER stays positive) and next bit set (always exactly 16 bytes). */
export function randomSerialHex(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] as number) & 0x7f) | 0x40;
  return bytes.toString("hex");
}

function authorityKeyId(issuer: forge.pki.Certificate): string {
  const ski = issuer.getExtension("subjectKeyIdentifier") as { subjectKeyIdentifier?: string } | undefined;
  return ski?.subjectKeyIdentifier
    ? forge.util.hexToBytes(ski.subjectKeyIdentifier)
    : issuer.generateSubjectKeyIdentifier().getBytes();
}

function baseCertificate(publicKey: forge.pki.PublicKey, window: ValidityWindow): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  cert.serialNumber = randomSerialHex();
  cert.validity.notBefore = window.notBefore;
  cert.validity.notAfter = window.notAfter;
  return cert;
}

/**
 * A workload certificate: empty subject, the SPIFFE URI as the only SAN (critical, as RFC 5280 requires when the
 * subject is empty), usable as both TLS client and server since every workload is both in a mesh.
 */
export function buildWorkloadCertificate(opts: {
  publicKey: forge.pki.PublicKey;
  spiffeUri: string;
  issuer: forge.pki.Certificate;
  window: ValidityWindow;
}): forge.pki.Certificate {
  const cert = baseCertificate(opts.publicKey, opts.window);
  cert.setSubject([]);
  cert.setIssuer(opts.issuer.subject.attributes);
  cert.setExtensions([
    { name: "basicConstraints", cA: false, critical: true },
    { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
    { name: "extKeyUsage", serverAuth: true, clientAuth: true },
    { name: "subjectAltName", altNames: [{ type: SAN_URI, value: opts.spiffeUri }], critical: true },
    { name: "authorityKeyIdentifier", keyIdentifier: authorityKeyId(opts.issuer) },
  ]);
  return cert;
}

/** The CA server's own serving certificate: DNS/IP names, server auth only; never a workload identity. */
export function buildServingCertificate(opts: {
  publicKey: forge.pki.PublicKey;
  dnsNames: string[];
  ips: string[];
  issuer: forge.pki.Certificate;
  window: ValidityWindow;
}): forge.pki.Certificate {
  const cert = baseCertificate(opts.publicKey, opts.window);
  cert.setSubject([{ name: "commonName", value: opts.dnsNames[0] ?? opts.ips[0] ?? "ambit-ca" }]);
  cert.setIssuer(opts.issuer.subject.attributes);
  const altNames = [
    ...opts.dnsNames.map((value) => ({ type: SAN_DNS, value })),
    ...opts.ips.map((ip) => ({ type: SAN_IP, ip })),
  ];
  cert.setExtensions([
    { name: "basicConstraints", cA: false, critical: true },
    { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
    { name: "extKeyUsage", serverAuth: true },
    { name: "subjectAltName", altNames },
    { name: "authorityKeyIdentifier", keyIdentifier: authorityKeyId(opts.issuer) },
  ]);
  return cert;
}

/** A self-signed mesh root: may only sign certificates (and CRLs), with no intermediates below it. */
export function buildRootCertificate(opts: {
  publicKey: forge.pki.PublicKey;
  trustDomain: string;
  window: ValidityWindow;
}): forge.pki.Certificate {
  const cert = baseCertificate(opts.publicKey, opts.window);
  const subject = [
    { name: "organizationName", value: opts.trustDomain },
    { name: "commonName", value: "ambit mesh CA" },
  ];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: "basicConstraints", cA: true, pathLenConstraint: 0, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  return cert;
}
