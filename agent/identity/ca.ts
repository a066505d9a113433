import { createPrivateKey, createPublicKey, type KeyObject, X509Certificate } from "node:crypto";
import forge from "node-forge";
import { inspectCsr } from "./csr.js";
import { IdentityError } from "./errors.js";
import { forgePublicKey, generateRsaKeyPair, type KeyPair, nativeSigner } from "./keys.js";
import { splitPemCertificates } from "./pem.js";
import { formatSpiffeId, type SpiffeId } from "./spiffe.js";
import {
  buildRootCertificate,
  buildServingCertificate,
  buildWorkloadCertificate,
  CA_LIFETIME_SEC,
  DEFAULT_LEAF_LIFETIME_SEC,
  validityWindow,
} from "./x509-profile.js";

export interface CaMaterial {
  /** The CA certificate, optionally followed by its own chain up to (not necessarily including) the root. */
  certPem: string;
  keyPem: string;
  /** Roots peers trust; defaults to the CA certificate itself, which must then be self-signed. */
  bundlePem?: string;
}

export interface IssuedCertificate {
  /** Leaf first, then any intermediates; never the root. */
  certChainPem: string;
  trustBundlePem: string;
  notAfter: Date;
}

function samePublicKey(a: KeyObject, b: KeyObject): boolean {
  return a.export({ type: "spki", format: "der" }).equals(b.export({ type: "spki", format: "der" }));
}

/**
 * The mesh CA: signs workload CSRs into SPIFFE certificates. Used in-process (embedded, local mode) and behind
 * `ca-server.ts`; authorization (who may ask for which identity) is the caller's job, the CA only makes sure a
 * certificate says exactly what was asked for and that the requester holds the key.
 */
export class MeshCa {
  readonly trustDomain: string;
  readonly leafLifetimeSec: number;
  private readonly cert: forge.pki.Certificate;
  private readonly signer: forge.pki.rsa.PrivateKey;
  private readonly chainAbove: string[];
  private readonly bundle: string;

  constructor(material: CaMaterial, options: { trustDomain: string; leafLifetimeSec?: number }) {
    this.trustDomain = options.trustDomain;
    this.leafLifetimeSec = options.leafLifetimeSec ?? DEFAULT_LEAF_LIFETIME_SEC;
    const [caPem, ...chainAbove] = splitPemCertificates(material.certPem);
    if (!caPem) throw new IdentityError("ca_files", "CA certificate PEM holds no certificate");
    let x509: X509Certificate;
    let key: KeyObject;
    try {
      x509 = new X509Certificate(caPem);
      key = createPrivateKey(material.keyPem);
      this.cert = forge.pki.certificateFromPem(caPem);
    } catch (cause) {
      throw new IdentityError("ca_files", "CA certificate or key cannot be parsed (RSA PEM expected)", { cause });
    }
    if (!x509.ca) throw new IdentityError("ca_files", "CA certificate is not a CA (basicConstraints CA:false)");
    if (!samePublicKey(x509.publicKey, createPublicKey(key))) {
      throw new IdentityError("ca_files", "CA key does not match the CA certificate");
    }
    const selfSigned = x509.checkIssued(x509) && x509.verify(x509.publicKey);
    if (!material.bundlePem && !selfSigned) {
      throw new IdentityError("ca_files", "an intermediate CA needs a trust bundle holding its root");
    }
    this.signer = nativeSigner(key);
    // A root is in every peer's bundle already; sending it in the chain would only cost bytes on each handshake.
    this.chainAbove = selfSigned ? [] : [caPem, ...chainAbove];
    this.bundle = material.bundlePem ?? caPem;
  }

  /** A fresh self-signed root for local mode; the caller persists the material (see ca-files.ts). */
  static async generateRoot(trustDomain: string, now = Date.now()): Promise<CaMaterial> {
    const keys = await generateRsaKeyPair();
    const cert = buildRootCertificate({
      publicKey: forgePublicKey(keys.publicKeyPem),
      trustDomain,
      window: validityWindow(now, CA_LIFETIME_SEC),
    });
    cert.sign(nativeSigner(keys.privateKeyPem), forge.md.sha256.create());
    return { certPem: forge.pki.certificateToPem(cert), keyPem: keys.privateKeyPem };
  }

  trustBundlePem(): string {
    return this.bundle;
  }

  /**
   * Signs a workload CSR for `id`. Throws IdentityError `bad_csr` / `csr_signature` / `csr_mismatch` for a CSR
   * that is malformed, does not prove key possession, or asks for anything but the SPIFFE URI of `id`.
   */
  signCsr(csrPem: unknown, id: SpiffeId, now = Date.now()): IssuedCertificate {
    if (id.trustDomain !== this.trustDomain) {
      throw new IdentityError("forbidden", `trust domain ${id.trustDomain} is not this CA's (${this.trustDomain})`);
    }
    const spiffeUri = formatSpiffeId(id);
    const publicKey = inspectCsr(csrPem, spiffeUri);
    const cert = buildWorkloadCertificate({ publicKey, spiffeUri, issuer: this.cert, window: this.window(now) });
    return this.finish(cert);
  }

  /** The CA server's TLS certificate (DNS/IP SANs; only ever for the CA itself). */
  issueServingCertificate(keys: KeyPair, names: { dnsNames: string[]; ips: string[] }, now = Date.now()) {
    const cert = buildServingCertificate({
      publicKey: forgePublicKey(keys.publicKeyPem),
      ...names,
      issuer: this.cert,
      window: this.window(now),
    });
    return this.finish(cert);
  }

  private window(now: number) {
    return validityWindow(now, this.leafLifetimeSec, this.cert.validity);
  }

  private finish(cert: forge.pki.Certificate): IssuedCertificate {
    cert.sign(this.signer, forge.md.sha256.create());
    return {
      certChainPem: [forge.pki.certificateToPem(cert), ...this.chainAbove].join(""),
      trustBundlePem: this.bundle,
      notAfter: cert.validity.notAfter,
    };
  }
}
