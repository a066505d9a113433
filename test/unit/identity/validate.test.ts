import test from "ava";
import { MeshCa } from "../../../agent/identity/ca.js";
import { generateRsaKeyPair } from "../../../agent/identity/keys.js";
import { parseSubjectAltName } from "../../../agent/identity/san.js";
import { type PeerRejectReason, parseTrustBundle, validatePeerChain } from "../../../agent/identity/validate.js";
import { forgeCert, issue, newCa, secondsFromNow, sid, TD } from "./helpers.js";

const uri = "spiffe://cluster.local/ns/shop/sa/cart";

async function setup() {
  const root = await MeshCa.generateRoot(TD);
  const ca = new MeshCa(root, { trustDomain: TD });
  const keys = await generateRsaKeyPair();
  const leaf = (o: { uris?: string[]; dns?: string[]; nb?: number; na?: number }) =>
    forgeCert({
      keys,
      issuer: { keyPem: root.keyPem, certPem: root.certPem },
      uris: o.uris ?? [uri],
      dns: o.dns ?? [],
      notBefore: secondsFromNow(o.nb ?? -60),
      notAfter: secondsFromNow(o.na ?? 3600),
    });
  return { root, ca, keys, leaf, opts: { trustDomain: TD, trustBundle: root.certPem } };
}

test("a CA-issued chain validates to its SPIFFE ID", async (t) => {
  const { ca, opts } = await setup();
  const w = await issue(ca, sid("shop", "cart"));
  t.deepEqual(validatePeerChain([w.chainPem], opts), { ok: true, id: sid("shop", "cart") });
  t.deepEqual(validatePeerChain([w.chainPem], { ...opts, trustBundle: parseTrustBundle(opts.trustBundle) }).ok, true);
});

test("each bad certificate is rejected with its own reason", async (t) => {
  const { leaf, keys, opts } = await setup();
  const foreign = await newCa();
  const cases: Array<[string, string, PeerRejectReason]> = [
    ["foreign CA", (await issue(foreign, sid("shop", "cart"))).chainPem, "unknown_ca"],
    [
      "self-signed",
      forgeCert({ keys, uris: [uri], notBefore: secondsFromNow(-60), notAfter: secondsFromNow(60) }),
      "unknown_ca",
    ],
    ["expired", leaf({ nb: -7200, na: -10 }), "expired"],
    ["not yet valid", leaf({ nb: 600, na: 7200 }), "not_yet_valid"],
    ["wrong trust domain", leaf({ uris: ["spiffe://evil.org/ns/shop/sa/cart"] }), "wrong_trust_domain"],
    ["two URI SANs", leaf({ uris: [uri, "spiffe://cluster.local/ns/shop/sa/other"] }), "bad_san"],
    ["URI and DNS SANs", leaf({ dns: ["cart.shop.svc"] }), "bad_san"],
    ["no SAN", leaf({ uris: [] }), "bad_san"],
    ["malformed SPIFFE URI", leaf({ uris: ["spiffe://cluster.local/workload/cart"] }), "bad_san"],
    ["not SPIFFE", leaf({ uris: ["https://cluster.local/ns/shop/sa/cart"] }), "bad_san"],
  ];
  for (const [what, pem, reason] of cases) {
    const r = validatePeerChain([pem], opts);
    t.false(r.ok, what);
    if (!r.ok) {
      t.is(r.reason, reason, `${what}: ${r.detail}`);
      t.true(r.detail.length > 0);
    }
  }
});

test("no certificate, the root itself, and garbage are rejected", async (t) => {
  const { root, opts } = await setup();
  t.like(validatePeerChain([], opts), { ok: false, reason: "no_certificate" });
  t.like(validatePeerChain([root.certPem], opts), { ok: false, reason: "bad_usage" });
  t.like(validatePeerChain(["not a cert"], opts), { ok: false, reason: "invalid_certificate" });
});

test("time is checked against `now`: a valid certificate is expired tomorrow", async (t) => {
  const { ca, opts } = await setup();
  const w = await issue(ca, sid("shop", "cart"));
  t.like(validatePeerChain([w.chainPem], { ...opts, now: Date.now() + 48 * 3600_000 }), {
    ok: false,
    reason: "expired",
  });
  t.like(validatePeerChain([w.chainPem], { ...opts, now: Date.now() - 3600_000 }), {
    ok: false,
    reason: "not_yet_valid",
  });
});

test("an intermediate CA: valid with the intermediate presented, unknown_ca without it", async (t) => {
  const { root, opts } = await setup();
  const interKeys = await generateRsaKeyPair();
  const interPem = forgeCert({
    keys: interKeys,
    issuer: { keyPem: root.keyPem, certPem: root.certPem },
    isCa: true,
    notBefore: secondsFromNow(-60),
    notAfter: secondsFromNow(3600),
  });
  const inter = new MeshCa(
    { certPem: interPem, keyPem: interKeys.privateKeyPem, bundlePem: root.certPem },
    { trustDomain: TD },
  );
  const w = await issue(inter, sid("shop", "cart"));
  t.is(w.bundlePem, root.certPem);
  const chain = w.chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  t.is(chain.length, 2, "leaf + intermediate");
  t.like(validatePeerChain(chain, opts), { ok: true, id: sid("shop", "cart") });
  t.like(validatePeerChain(chain.slice(0, 1), opts), { ok: false, reason: "unknown_ca" });
});

test("SAN strings with quoted values cannot smuggle a second entry", (t) => {
  t.deepEqual(parseSubjectAltName('URI:"spiffe://a/ns/x/sa/y, URI:spiffe://b"'), [
    { type: "URI", value: "spiffe://a/ns/x/sa/y, URI:spiffe://b" },
  ]);
  t.deepEqual(parseSubjectAltName("URI:spiffe://a, DNS:b"), [
    { type: "URI", value: "spiffe://a" },
    { type: "DNS", value: "b" },
  ]);
  t.deepEqual(parseSubjectAltName(undefined), []);
  t.throws(() => parseSubjectAltName('URI:"unterminated'));
});
