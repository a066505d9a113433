import forge from "node-forge";
import { certificationRequestInfoBytes, publicKeyAlgorithm, rsaSignatureValid } from "./csr-signature.js";
import { CsrError, IdentityError } from "./errors.js";
import { forgePublicKey, type KeyPair, nativeSigner } from "./keys.js";

const SAN_URI = 6;
const MAX_CSR_PEM = 16 * 1024;
/**
 * The keys the CA certifies: RSA, modulus 2048..4096 bits inclusive, public exponent exactly 65537 (what keys.ts
 * generates and what every mainstream toolkit uses). Checked right after parsing (about 1 ms even for a 16 KiB CSR)
 * and before any signature work: verification cost grows with both the modulus and the exponent, and in forge's
 * JavaScript bignums a 16384-bit modulus with an 8192-bit exponent held the CA's event loop for 104 s as reported
 * (50 s on the dev VM; 4096/4096: 1.1 s), stopping issuance for the whole cluster. Anything else is refused as
 * bad_csr with the reason. The signature itself is then checked natively (csr-signature.ts).
 */
const RSA_MIN_BITS = 2048;
const RSA_MAX_BITS = 4096;
const RSA_EXPONENT = 65537;
const RSA_ENCRYPTION = forge.pki.oids.rsaEncryption as string;
// Names for the refusal message; any other algorithm is named by its OID.
const KEY_ALGORITHMS = new Map([
  ["1.2.840.10045.2.1", "EC"],
  ["1.3.101.112", "Ed25519"],
  ["1.3.101.113", "Ed448"],
  ["1.2.840.113549.1.1.10", "RSASSA-PSS"],
  ["1.2.840.10040.4.1", "DSA"],
]);
const SIGNATURE_HASHES = new Map<string, "sha256" | "sha384" | "sha512">(
  (["sha256", "sha384", "sha512"] as const).map((h) => [forge.pki.oids[`${h}WithRSAEncryption`] as string, h]),
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

function checkKeyPolicy(key: forge.pki.rsa.PublicKey): void {
  const bits = key.n.bitLength();
  if (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS) {
    throw new CsrError("key_size", `CSR key is ${bits}-bit RSA; ${RSA_MIN_BITS} to ${RSA_MAX_BITS} bits required`);
  }
  const eBits = key.e.bitLength();
  const e = eBits <= 32 ? Number.parseInt(key.e.toString(16), 16) : undefined;
  if (e !== RSA_EXPONENT) {
    const got = e === undefined ? `a ${eBits}-bit exponent` : `exponent ${e}`;
    throw new CsrError("key_exponent", `CSR key has RSA public ${got}; only ${RSA_EXPONENT} is accepted`);
  }
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
  if (typeof csrPem !== "string") throw new CsrError("malformed", "CSR must be a PEM string");
  if (csrPem.length > MAX_CSR_PEM) throw new CsrError("too_large", "CSR must be at most 16 KiB of PEM");
  const malformed = (cause: unknown) => new CsrError("malformed", "CSR is not a PEM PKCS#10 request", { cause });
  let der: Buffer;
  let algorithm: string;
  try {
    const pem = forge.pem.decode(csrPem)[0];
    if (pem?.type !== "CERTIFICATE REQUEST") throw new Error(`PEM block is ${pem?.type ?? "missing"}`);
    der = Buffer.from(pem.body, "binary");
    algorithm = publicKeyAlgorithm(der);
  } catch (cause) {
    throw malformed(cause);
  }
  if (algorithm !== RSA_ENCRYPTION) {
    const name = KEY_ALGORITHMS.get(algorithm) ?? `algorithm ${algorithm}`;
    throw new CsrError("key_type", `CSR key is ${name}; only RSA is accepted`);
  }
  let csr: forge.pki.CertificateSigningRequest;
  let signed: Buffer;
  try {
    // The same DER feeds the parser and the signature check, so what is verified is what is read.
    csr = forge.pki.certificationRequestFromAsn1(forge.asn1.fromDer(der.toString("binary"), true));
    signed = certificationRequestInfoBytes(der);
  } catch (cause) {
    throw malformed(cause);
  }
  const hash = SIGNATURE_HASHES.get(csr.signatureOid ?? "");
  if (!csr.publicKey || !hash) {
    throw new CsrError("signature_algorithm", `CSR signature algorithm ${csr.signatureOid} is not RSA with SHA-2`);
  }
  const publicKey = csr.publicKey as forge.pki.rsa.PublicKey;
  checkKeyPolicy(publicKey);
  let verified = false;
  try {
    verified = rsaSignatureValid(signed, publicKey, hash, Buffer.from(csr.signature as string, "binary"));
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
