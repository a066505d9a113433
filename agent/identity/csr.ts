import forge from "node-forge";
import { IdentityError } from "./errors.js";
import { forgePublicKey, type KeyPair, nativeSigner } from "./keys.js";

const SAN_URI = 6;
const MAX_CSR_PEM = 16 * 1024;
const MIN_RSA_BITS = 2048;
const ACCEPTED_SIGNATURES = new Set(
  ["sha256WithRSAEncryption", "sha384WithRSAEncryption", "sha512WithRSAEncryption"].map((n) => forge.pki.oids[n]),
);

/** The agent's side: a PKCS#10 request for exactly one SPIFFE URI SAN, empty subject, signed with the new key. */
export function createCsrPem(keys: KeyPair, spiffeUri: string): string {
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forgePublicKey(keys.publicKeyPem);
  csr.setSubject([]);
  csr.setAttributes([
    {
      name: "extensionRequest",
      extensions: [{ name: "subjectAltName", altNames: [{ type: SAN_URI, value: spiffeUri }], critical: true }],
    },
  ]);
  csr.sign(nativeSigner(keys.privateKeyPem), forge.md.sha256.create());
  return forge.pki.certificationRequestToPem(csr);
}

interface ParsedAttribute {
  type?: string;
  extensions?: Array<{ id?: string; name?: string; altNames?: Array<{ type: number; value: string }> }>;
}

/**
 * The CA's side: checks that a CSR proves possession of its key and asks for nothing but `expectedUri`, and returns
 * the public key to certify. The CSR's extensions are only compared, never copied: the CA builds the certificate.
 */
export function inspectCsr(csrPem: unknown, expectedUri: string): forge.pki.PublicKey {
  if (typeof csrPem !== "string" || csrPem.length > MAX_CSR_PEM) {
    throw new IdentityError("bad_csr", "CSR must be a PEM string of at most 16 KiB");
  }
  let csr: forge.pki.CertificateSigningRequest;
  try {
    csr = forge.pki.certificationRequestFromPem(csrPem);
  } catch (cause) {
    throw new IdentityError("bad_csr", "CSR is not a PEM PKCS#10 request with an RSA key", { cause });
  }
  if (!csr.publicKey || !ACCEPTED_SIGNATURES.has(csr.signatureOid ?? "")) {
    throw new IdentityError("bad_csr", `CSR signature algorithm ${csr.signatureOid} is not RSA with SHA-2`);
  }
  const bits = (csr.publicKey as forge.pki.rsa.PublicKey).n.bitLength();
  if (bits < MIN_RSA_BITS) throw new IdentityError("bad_csr", `CSR key is ${bits}-bit RSA; at least 2048 required`);
  let verified = false;
  try {
    verified = csr.verify();
  } catch (cause) {
    throw new IdentityError("csr_signature", "CSR signature could not be checked", { cause });
  }
  if (!verified) throw new IdentityError("csr_signature", "CSR signature does not match its public key");

  if (csr.subject.attributes.length > 0) {
    throw new IdentityError("csr_mismatch", "CSR asks for a subject; workload certificates have an empty one");
  }
  const attributes = csr.attributes as ParsedAttribute[];
  const extRequest = attributes.find((a) => a.type === forge.pki.oids.extensionRequest);
  if (attributes.length !== 1 || !extRequest?.extensions) {
    throw new IdentityError("csr_mismatch", "CSR must carry exactly one attribute: the extension request");
  }
  const [ext, ...extra] = extRequest.extensions;
  if (!ext || extra.length > 0 || ext.name !== "subjectAltName") {
    const names = extRequest.extensions.map((e) => e.name ?? e.id).join(", ");
    throw new IdentityError("csr_mismatch", `CSR must request only a subjectAltName extension, got: ${names}`);
  }
  const sans = ext.altNames ?? [];
  if (sans.length !== 1 || sans[0]?.type !== SAN_URI || sans[0].value !== expectedUri) {
    const got = sans.map((s) => `${s.type}:${s.value}`).join(", ");
    throw new IdentityError("csr_mismatch", `CSR must request exactly the SAN URI ${expectedUri}, got: ${got}`);
  }
  return csr.publicKey;
}
