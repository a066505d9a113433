import { generateKeyPair } from "node:crypto";
import { promisify } from "node:util";
import test from "ava";
import forge from "node-forge";
import { createCsrPem } from "../../../agent/identity/csr.js";
import { CsrError, IdentityError } from "../../../agent/identity/errors.js";
import { generateRsaKeyPair, nativeSigner } from "../../../agent/identity/keys.js";
import { hostileCsr, newCa, opensslCsr, sid } from "./helpers.js";

const id = sid("shop", "cart");
const uri = "spiffe://cluster.local/ns/shop/sa/cart";

function csrWith(
  keys: { privateKeyPem: string; publicKeyPem: string },
  attrs: object[],
  subject: object[] = [],
  signingKeyPem = keys.privateKeyPem,
): string {
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forge.pki.publicKeyFromPem(keys.publicKeyPem);
  csr.setSubject(subject as forge.pki.CertificateField[]);
  csr.setAttributes(attrs as forge.pki.CertificateField[]);
  csr.sign(nativeSigner(signingKeyPem), forge.md.sha256.create());
  return forge.pki.certificationRequestToPem(csr);
}

const sanRequest = (altNames: object[], more: object[] = []) => [
  { name: "extensionRequest", extensions: [{ name: "subjectAltName", altNames }, ...more] },
];

async function refusal(t: import("ava").ExecutionContext, csr: unknown): Promise<string> {
  const ca = await newCa();
  const err = t.throws(() => ca.signCsr(csr, id), { instanceOf: IdentityError });
  return err?.code ?? "";
}

test("a well-formed CSR is signed", async (t) => {
  const ca = await newCa();
  const keys = await generateRsaKeyPair();
  t.regex(ca.signCsr(createCsrPem(keys, uri), id).certChainPem, /BEGIN CERTIFICATE/);
});

test("malformed CSRs are refused with bad_csr", async (t) => {
  for (const bad of [
    "",
    "hello",
    42,
    "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
  ]) {
    t.is(await refusal(t, bad), "bad_csr");
  }
  const ca = await newCa();
  t.is(await refusal(t, ca.trustBundlePem()), "bad_csr", "a certificate is not a CSR");
});

test("a CSR whose public key is not the one that signed it is refused with csr_signature", async (t) => {
  const [a, b] = await Promise.all([generateRsaKeyPair(), generateRsaKeyPair()]);
  // Key B's public key, signed by key A: no proof that the requester holds B's private key.
  t.is(await refusal(t, csrWith(b, sanRequest([{ type: 6, value: uri }]), [], a.privateKeyPem)), "csr_signature");
  // Flip one bit of an otherwise valid CSR's signature.
  const der = Buffer.from(forge.util.decode64(createCsrPem(a, uri).replace(/-----[^-]+-----|\s/g, "")), "binary");
  der[der.length - 5] = (der[der.length - 5] as number) ^ 0x01;
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`;
  t.is(await refusal(t, tampered), "csr_signature");
});

test("CSRs asking for more or other than the SPIFFE URI are refused with csr_mismatch", async (t) => {
  const keys = await generateRsaKeyPair();
  const cases: Array<[string, string]> = [
    [
      "extra DNS SAN",
      csrWith(
        keys,
        sanRequest([
          { type: 6, value: uri },
          { type: 2, value: "evil.example" },
        ]),
      ),
    ],
    [
      "two URIs",
      csrWith(
        keys,
        sanRequest([
          { type: 6, value: uri },
          { type: 6, value: `${uri}x` },
        ]),
      ),
    ],
    [
      "another identity",
      csrWith(keys, sanRequest([{ type: 6, value: "spiffe://cluster.local/ns/kube-system/sa/admin" }])),
    ],
    [
      "CA:true requested",
      csrWith(keys, sanRequest([{ type: 6, value: uri }], [{ name: "basicConstraints", cA: true }])),
    ],
    ["no extensions", csrWith(keys, [])],
    ["a subject", csrWith(keys, sanRequest([{ type: 6, value: uri }]), [{ name: "commonName", value: "admin" }])],
  ];
  for (const [what, csr] of cases) t.is(await refusal(t, csr), "csr_mismatch", what);
});

test("keys outside RSA 2048..4096 bits with exponent 65537 are refused as bad_csr, naming the problem", async (t) => {
  const ca = await newCa();
  const cases: Array<[string, string, "key_size" | "key_exponent", RegExp]> = [
    [
      "16384-bit modulus, 8192-bit exponent",
      hostileCsr(uri, 16384, { bits: 8192 }),
      "key_size",
      /16384-bit RSA; 2048 to 4096/,
    ],
    ["8192-bit modulus", hostileCsr(uri, 8192, 65537), "key_size", /8192-bit RSA; 2048 to 4096/],
    ["1024-bit modulus", hostileCsr(uri, 1024, 65537), "key_size", /1024-bit RSA; 2048 to 4096/],
    ["exponent 3", hostileCsr(uri, 2048, 3), "key_exponent", /exponent 3; only 65537/],
    ["4096-bit exponent", hostileCsr(uri, 4096, { bits: 4096 }), "key_exponent", /a 4096-bit exponent; only 65537/],
  ];
  for (const [what, csr, reason, message] of cases) {
    const err = t.throws(() => ca.signCsr(csr, id), { instanceOf: CsrError }, what);
    t.like(err, { code: "bad_csr", reason }, what);
    t.regex(err?.message ?? "", message, what);
  }
});

test("keys other than RSA are refused as bad_csr key_type, naming the type, however well-formed the request", async (t) => {
  const ca = await newCa();
  const cases: Array<[string, RegExp]> = [
    [await opensslCsr("ec", uri), /CSR key is EC; only RSA is accepted/],
    [await opensslCsr("ed25519", uri), /CSR key is Ed25519; only RSA is accepted/],
    [await opensslCsr("rsa-pss", uri), /CSR key is RSASSA-PSS; only RSA is accepted/],
  ];
  for (const [csr, message] of cases) {
    t.regex(csr, /BEGIN CERTIFICATE REQUEST/);
    const err = t.throws(() => ca.signCsr(csr, id), { instanceOf: CsrError });
    t.like(err, { code: "bad_csr", reason: "key_type" });
    t.regex(err?.message ?? "", message);
  }
});

test("bad_csr says whether the request was malformed or too large to look at", async (t) => {
  const ca = await newCa();
  const reason = (csr: unknown) => (t.throws(() => ca.signCsr(csr, id), { instanceOf: CsrError }) as CsrError).reason;
  t.is(reason("hello"), "malformed");
  t.is(reason(42), "malformed");
  t.is(reason(ca.trustBundlePem()), "malformed", "a certificate is not a CSR");
  t.is(reason(`${createCsrPem(await generateRsaKeyPair(), uri)}${" ".repeat(16 * 1024)}`), "too_large");
});

test("the key policy's bounds are inclusive: a 4096-bit key is signed", async (t) => {
  const ca = await newCa();
  const { privateKey, publicKey } = await promisify(generateKeyPair)("rsa", {
    modulusLength: 4096,
    publicExponent: 65537,
    publicKeyEncoding: { type: "spki", format: "pem" },
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
  });
  const pem = createCsrPem({ privateKeyPem: privateKey, publicKeyPem: publicKey }, uri);
  t.regex(ca.signCsr(pem, id).certChainPem, /BEGIN CERTIFICATE/);
});

test("trailing bytes after the CSR are refused, not ignored", async (t) => {
  const keys = await generateRsaKeyPair();
  const der = Buffer.from(forge.util.decode64(createCsrPem(keys, uri).replace(/-----[^-]+-----|\s/g, "")), "binary");
  const padded = Buffer.concat([der, Buffer.from([0, 0])]).toString("base64");
  t.is(
    await refusal(t, `-----BEGIN CERTIFICATE REQUEST-----\n${padded}\n-----END CERTIFICATE REQUEST-----\n`),
    "bad_csr",
  );
});

test("an identity outside the CA's trust domain is refused", async (t) => {
  const ca = await newCa();
  const keys = await generateRsaKeyPair();
  const other = sid("shop", "cart", "other.org");
  const err = t.throws(() => ca.signCsr(createCsrPem(keys, "spiffe://other.org/ns/shop/sa/cart"), other));
  t.is((err as IdentityError).code, "forbidden");
});
