import test from "ava";
import forge from "node-forge";
import { createCsrPem } from "../../../agent/identity/csr.js";
import { IdentityError } from "../../../agent/identity/errors.js";
import { generateRsaKeyPair, nativeSigner } from "../../../agent/identity/keys.js";
import { newCa, sid } from "./helpers.js";

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

test("an identity outside the CA's trust domain is refused", async (t) => {
  const ca = await newCa();
  const keys = await generateRsaKeyPair();
  const other = sid("shop", "cart", "other.org");
  const err = t.throws(() => ca.signCsr(createCsrPem(keys, "spiffe://other.org/ns/shop/sa/cart"), other));
  t.is((err as IdentityError).code, "forbidden");
});
