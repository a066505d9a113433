import { execFile } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type SecureContext, TLSSocket } from "node:tls";
import { promisify } from "node:util";
import forge from "node-forge";
import { MeshCa } from "../../../agent/identity/ca.js";
import { createCsrPem } from "../../../agent/identity/csr.js";
import { generateRsaKeyPair, type KeyPair } from "../../../agent/identity/keys.js";
import { formatSpiffeId, type SpiffeId } from "../../../agent/identity/spiffe.js";

export const TD = "cluster.local";

export function sid(namespace: string, serviceAccount: string, trustDomain = TD): SpiffeId {
  return { trustDomain, namespace, serviceAccount };
}

export async function newCa(leafLifetimeSec = 3600, trustDomain = TD): Promise<MeshCa> {
  return new MeshCa(await MeshCa.generateRoot(trustDomain), { trustDomain, leafLifetimeSec });
}

export interface Workload {
  keys: KeyPair;
  chainPem: string;
  bundlePem: string;
}

export async function issue(ca: MeshCa, id: SpiffeId): Promise<Workload> {
  const keys = await generateRsaKeyPair();
  const issued = ca.signCsr(createCsrPem(keys, formatSpiffeId(id)), id);
  return { keys, chainPem: issued.certChainPem, bundlePem: issued.trustBundlePem };
}

/**
 * A CSR for a key no one holds: a random `modulusBits`-bit modulus, exponent `exponent` (a number) or a random
 * `{ bits }`-bit one, and random bytes for a signature. The CA must refuse it on the key alone, before any signature
 * work, so nothing here needs to be valid.
 */
export function hostileCsr(uri: string, modulusBits: number, exponent: number | { bits: number }): string {
  // Whole bytes with the top bit set: exactly `bits` bits long (every size used here is a multiple of 8).
  const big = (bits: number) => {
    const bytes = randomBytes(bits / 8);
    bytes[0] = (bytes[0] as number) | 0x80;
    return new forge.jsbn.BigInteger(bytes.toString("hex"), 16);
  };
  const n = big(modulusBits);
  const e = typeof exponent === "number" ? new forge.jsbn.BigInteger(String(exponent), 10) : big(exponent.bits);
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forge.pki.setRsaPublicKey(n, e);
  csr.setAttributes([
    { name: "extensionRequest", extensions: [{ name: "subjectAltName", altNames: [{ type: 6, value: uri }] }] },
  ]);
  // A junk signature below the modulus (leading zero byte), so an unchecked verifier does the whole exponentiation.
  const junkSigner = {
    sign: () => Buffer.concat([Buffer.alloc(1), randomBytes(modulusBits / 8 - 1)]).toString("binary"),
  };
  csr.sign(junkSigner as unknown as forge.pki.rsa.PrivateKey, forge.md.sha256.create());
  return forge.pki.certificationRequestToPem(csr);
}

/** Hand-made certificates for the cases the CA refuses to produce (forge, signed with forge's own JS RSA). */
export function forgeCert(opts: {
  keys: KeyPair;
  issuer?: { keyPem: string; certPem: string };
  uris?: string[];
  dns?: string[];
  notBefore: Date;
  notAfter: Date;
  isCa?: boolean;
}): string {
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(opts.keys.publicKeyPem);
  cert.serialNumber = "01";
  cert.validity.notBefore = opts.notBefore;
  cert.validity.notAfter = opts.notAfter;
  const subject = opts.isCa ? [{ name: "commonName", value: "test CA" }] : [{ name: "commonName", value: "leaf" }];
  cert.setSubject(subject);
  const issuerCert = opts.issuer ? forge.pki.certificateFromPem(opts.issuer.certPem) : undefined;
  cert.setIssuer(issuerCert ? issuerCert.subject.attributes : subject);
  const altNames = [
    ...(opts.uris ?? []).map((value) => ({ type: 6, value })),
    ...(opts.dns ?? []).map((value) => ({ type: 2, value })),
  ];
  const exts: object[] = [{ name: "basicConstraints", cA: !!opts.isCa }];
  if (opts.isCa) exts.push({ name: "keyUsage", keyCertSign: true, cRLSign: true });
  else exts.push({ name: "extKeyUsage", serverAuth: true, clientAuth: true });
  if (altNames.length) exts.push({ name: "subjectAltName", altNames });
  cert.setExtensions(exts);
  cert.sign(forge.pki.privateKeyFromPem(opts.issuer?.keyPem ?? opts.keys.privateKeyPem), forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

export const secondsFromNow = (s: number) => new Date(Math.floor(Date.now() / 1000 + s) * 1000);

/**
 * An mTLS server the way the proxy runs one: a plain TCP listener wrapping each connection in a server TLSSocket
 * whose SecureContext is chosen per connection (undefined: the connection is closed, failing closed).
 */
export async function startMtlsServer(
  contextFor: () => SecureContext | undefined,
  onSecure: (socket: TLSSocket) => void,
): Promise<{ server: Server; port: number }> {
  const server = createServer((raw: Socket) => {
    const ctx = contextFor();
    if (!ctx) {
      raw.destroy();
      return;
    }
    const tls = new TLSSocket(raw, {
      isServer: true,
      secureContext: ctx,
      requestCert: true,
      rejectUnauthorized: false,
    });
    tls.on("error", () => tls.destroy());
    tls.on("secure", () => onSecure(tls));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { server, port: (server.address() as { port: number }).port };
}

/** Connects with `ctx`, leaving verification to the caller (validateTlsPeer). */
export async function mtlsConnect(port: number, ctx: SecureContext): Promise<TLSSocket> {
  const socket = connect({ host: "127.0.0.1", port, secureContext: ctx, rejectUnauthorized: false });
  await once(socket, "secureConnect");
  return socket;
}

/**
 * A well-formed, correctly signed CSR for `uri` whose key is not RSA (forge cannot make one): the key from Node,
 * the request from the openssl command line.
 */
export async function opensslCsr(kind: "ec" | "ed25519" | "rsa-pss", uri: string): Promise<string> {
  const { privateKey } =
    kind === "ec"
      ? generateKeyPairSync("ec", { namedCurve: "P-256" })
      : kind === "ed25519"
        ? generateKeyPairSync("ed25519")
        : generateKeyPairSync("rsa-pss", { modulusLength: 2048 });
  const dir = await mkdtemp(join(tmpdir(), "ambit-csr-"));
  try {
    const keyFile = join(dir, "key.pem");
    await writeFile(keyFile, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    const args = ["req", "-new", "-key", keyFile, "-subj", "/CN=x", "-addext", `subjectAltName=URI:${uri}`];
    const { stdout } = await promisify(execFile)("openssl", args, { timeout: 10_000 });
    return stdout;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
