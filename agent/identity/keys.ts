import { constants, createPrivateKey, generateKeyPair, type KeyObject, privateEncrypt } from "node:crypto";
import { promisify } from "node:util";
import forge from "node-forge";
import { IdentityError } from "./errors.js";

const generateKeyPairAsync = promisify(generateKeyPair);

export interface KeyPair {
  privateKeyPem: string;
  publicKeyPem: string;
}

export const KEY_BITS = 2048;

/**
 * RSA-2048 (node-forge cannot sign with EC keys). We call Node's async `crypto.generateKeyPair` ourselves rather
 * than forge's `pki.rsa.generateKeyPair`: forge only delegates to Node when given a callback, with no custom PRNG
 * and `usePureJavaScript` off, and otherwise silently falls back to a pure-JS prime search that blocks the event
 * loop for seconds. Calling Node directly makes "native, off the event loop (libuv threadpool)" a guarantee.
 */
export async function generateRsaKeyPair(): Promise<KeyPair> {
  try {
    const { privateKey, publicKey } = await generateKeyPairAsync("rsa", {
      modulusLength: KEY_BITS,
      publicExponent: 0x10001,
      publicKeyEncoding: { type: "spki", format: "pem" },
      privateKeyEncoding: { type: "pkcs8", format: "pem" },
    });
    return { privateKeyPem: privateKey, publicKeyPem: publicKey };
  } catch (cause) {
    throw new IdentityError("keygen", "native RSA key generation failed", { cause });
  }
}

// DER prefix of DigestInfo{sha256, NULL} (RFC 8017 section 9.2, note 1); the 32-byte digest follows.
const SHA256_DIGEST_INFO = Buffer.from("3031300d060960864801650304020105000420", "hex");

/**
 * A stand-in for a forge private key whose `sign(md)` runs in OpenSSL: forge builds the TBS structure and digests
 * it; the RSA private-key operation (the slow part, ~10x slower in forge's JS bignums) happens natively. The result
 * is the same RSASSA-PKCS1-v1_5 signature forge would produce.
 */
export function nativeSigner(privateKeyPem: string | KeyObject): forge.pki.rsa.PrivateKey {
  const key = typeof privateKeyPem === "string" ? createPrivateKey(privateKeyPem) : privateKeyPem;
  const signer = {
    sign(md: forge.md.MessageDigest): string {
      if (md.algorithm !== "sha256") throw new Error(`native signer supports sha256 only, got ${md.algorithm}`);
      const digest = Buffer.from(md.digest().getBytes(), "binary");
      const digestInfo = Buffer.concat([SHA256_DIGEST_INFO, digest]);
      return privateEncrypt({ key, padding: constants.RSA_PKCS1_PADDING }, digestInfo).toString("binary");
    },
  };
  // forge's cert.sign/csr.sign only ever call key.sign(md); the rest of the forge key interface is never touched.
  return signer as unknown as forge.pki.rsa.PrivateKey;
}

export function forgePublicKey(publicKeyPem: string): forge.pki.rsa.PublicKey {
  return forge.pki.publicKeyFromPem(publicKeyPem) as forge.pki.rsa.PublicKey;
}
