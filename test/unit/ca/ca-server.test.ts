import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import test from "ava";
import forge from "node-forge";
import pino from "pino";
import { startCaServer } from "../../../agent/ca/ca-server.js";
import type { RateLimitOptions } from "../../../agent/ca/rate-limit.js";
import { FileTokenReviewer } from "../../../agent/ca/token-reviewer.js";
import { RemoteCertificateSource } from "../../../agent/identity/ca-client.js";
import { CertManager } from "../../../agent/identity/cert-manager.js";
import { createCsrPem } from "../../../agent/identity/csr.js";
import { CaRequestError } from "../../../agent/identity/errors.js";
import { generateRsaKeyPair, nativeSigner } from "../../../agent/identity/keys.js";
import type { PodRecord } from "../../../agent/kube/records.js";
import { podRecord } from "../../support/records.js";
import { hostileCsr, newCa, opensslCsr, sid } from "../identity/helpers.js";

const pods: PodRecord[] = [
  podRecord({ name: "cart-1", serviceAccount: "cart", nodeName: "node-a" }),
  podRecord({ name: "db-1", serviceAccount: "db", nodeName: "node-b" }),
];
const lookupPod = (ns: string, name: string) => pods.find((p) => p.namespace === ns && p.name === name);

async function setup(t: import("ava").ExecutionContext, nodeRateLimit?: RateLimitOptions) {
  const dir = await mkdtemp(join(tmpdir(), "ambit-ca-srv-"));
  const ca = await newCa(3600);
  const files = { tokens: join(dir, "tokens.json"), token: join(dir, "token"), bundle: join(dir, "bundle.pem") };
  await writeFile(files.tokens, JSON.stringify({ "tok-a": "node-a", "tok-b": "node-b" }));
  await writeFile(files.token, "tok-a\n");
  await writeFile(files.bundle, ca.trustBundlePem());
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      lines.push(JSON.parse(String(chunk)));
      cb();
    },
  });
  const server = await startCaServer({
    ca,
    reviewer: new FileTokenReviewer(files.tokens),
    nodeRateLimit,
    lookupPod,
    host: "127.0.0.1",
    port: 0,
    logger: pino({ level: "info" }, sink),
  });
  t.teardown(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });
  const client = new RemoteCertificateSource({ url: server.url, caBundleFile: files.bundle, tokenFile: files.token });
  return { ca, server, client, files, lines };
}

async function refusal(p: Promise<unknown>): Promise<{ status: number; code: string }> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CaRequestError) return { status: err.status, code: err.code };
    throw err;
  }
  throw new Error("expected a refusal");
}

async function csrFor(spiffe: string) {
  return createCsrPem(await generateRsaKeyPair(), spiffe);
}

const CART = "spiffe://cluster.local/ns/shop/sa/cart";
const cartReq = async (csrPem?: string) => ({
  csrPem: csrPem ?? (await csrFor(CART)),
  identity: sid("shop", "cart"),
  pod: { namespace: "shop", name: "cart-1" },
});

test("an agent gets the identity of a pod on its node, end to end through the certificate manager", async (t) => {
  const { client, ca } = await setup(t);
  const mgr = new CertManager({ source: client });
  t.teardown(() => mgr.close());
  await mgr.acquire(sid("shop", "cart"), { namespace: "shop", name: "cart-1" });
  t.truthy(mgr.secureContext(sid("shop", "cart")));
  t.is(await client.trustBundle(), ca.trustBundlePem());
});

test("node authorization: another node's pod, a mismatched identity, an unknown pod -> 403", async (t) => {
  const { client, lines } = await setup(t);
  const dbReq = {
    csrPem: await csrFor("spiffe://cluster.local/ns/shop/sa/db"),
    identity: sid("shop", "db"),
    pod: { namespace: "shop", name: "db-1" },
  };
  t.deepEqual(await refusal(client.sign(dbReq)), { status: 403, code: "forbidden" });
  const log = lines.find((l) => l.reason === "other_node");
  t.like(log, { node: "node-a", pod: "shop/db-1", identity: "spiffe://cluster.local/ns/shop/sa/db", status: 403 });
  const mismatch = { ...dbReq, pod: { namespace: "shop", name: "cart-1" } };
  t.deepEqual(await refusal(client.sign(mismatch)), { status: 403, code: "forbidden" });
  t.truthy(lines.find((l) => l.reason === "identity_mismatch"));
  const ghost = { ...(await cartReq()), pod: { namespace: "shop", name: "ghost" } };
  t.deepEqual(await refusal(client.sign(ghost)), { status: 403, code: "forbidden" });
});

test("authentication: a bad token -> 401; the token file is re-read on every request", async (t) => {
  const { client, files } = await setup(t);
  await writeFile(files.token, "not-a-token");
  t.deepEqual(await refusal(client.sign(await cartReq())), { status: 401, code: "unauthenticated" });
  await writeFile(files.token, "tok-b");
  const dbReq = {
    csrPem: await csrFor("spiffe://cluster.local/ns/shop/sa/db"),
    identity: sid("shop", "db"),
    pod: { namespace: "shop", name: "db-1" },
  };
  t.regex((await client.sign(dbReq)).certChainPem, /BEGIN CERTIFICATE/, "node-b's rotated-in token works");
});

test("CSR refusals carry their code: malformed, key not matching its signature, extra SANs", async (t) => {
  const { client } = await setup(t);
  t.deepEqual(await refusal(client.sign(await cartReq("garbage"))), { status: 400, code: "bad_csr" });
  const [a, b] = await Promise.all([generateRsaKeyPair(), generateRsaKeyPair()]);
  const forged = forge.pki.createCertificationRequest();
  forged.publicKey = forge.pki.publicKeyFromPem(b.publicKeyPem);
  forged.setAttributes([
    { name: "extensionRequest", extensions: [{ name: "subjectAltName", altNames: [{ type: 6, value: CART }] }] },
  ]);
  forged.sign(nativeSigner(a.privateKeyPem), forge.md.sha256.create());
  const tampered = forge.pki.certificationRequestToPem(forged);
  t.deepEqual(await refusal(client.sign(await cartReq(tampered))), { status: 400, code: "csr_signature" });
  const extra = forge.pki.createCertificationRequest();
  extra.publicKey = forge.pki.publicKeyFromPem(a.publicKeyPem);
  extra.setAttributes([
    {
      name: "extensionRequest",
      extensions: [
        {
          name: "subjectAltName",
          altNames: [
            { type: 6, value: CART },
            { type: 2, value: "admin.local" },
          ],
        },
      ],
    },
  ]);
  extra.sign(nativeSigner(a.privateKeyPem), forge.md.sha256.create());
  const extraPem = forge.pki.certificationRequestToPem(extra);
  t.deepEqual(await refusal(client.sign(await cartReq(extraPem))), { status: 400, code: "csr_mismatch" });
});

interface RawAnswer {
  status: number;
  retryAfter?: string | undefined;
  body: { code?: string; reason?: string; message?: string };
}

function rawPost(url: string, ca: string, body: string, token = "tok-a"): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}/v1/sign`,
      { method: "POST", ca, headers: { authorization: `Bearer ${token}` } },
      (res) => {
        let text = "";
        res.on("data", (d) => {
          text += d;
        });
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, retryAfter: res.headers["retry-after"], body: JSON.parse(text) }),
        );
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

test("bad JSON -> 400, wrong shape -> 400, oversized body -> 413, no token -> 401, unknown path -> 404", async (t) => {
  const { server, ca } = await setup(t);
  const bundle = ca.trustBundlePem();
  t.like(await rawPost(server.url, bundle, "{nope"), { status: 400, body: { code: "bad_request" } });
  t.like(await rawPost(server.url, bundle, JSON.stringify({ csr: 1 })), { status: 400, body: { code: "bad_request" } });
  t.like(await rawPost(server.url, bundle, "x".repeat(200_000)), { status: 413, body: { code: "body_too_large" } });
  t.like(await rawPost(server.url, bundle, "{}", ""), {
    status: 401,
    body: { code: "unauthenticated", reason: "missing_token" },
  });
  t.like(await rawPost(server.url, bundle, "{}", "forged"), {
    status: 401,
    body: { code: "unauthenticated", reason: "invalid_token" },
  });
  const badId = JSON.stringify({
    csr: "x",
    identity: { namespace: "shop", serviceAccount: "a/b" },
    pod: { namespace: "shop", name: "cart-1" },
  });
  t.like(await rawPost(server.url, bundle, badId), { status: 400, body: { code: "bad_san" } });
  const notFound = await new Promise<number>((resolve) => {
    request(`${server.url}/v2/x`, { ca: bundle }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).end();
  });
  t.is(notFound, 404);
});

test("CSR keys outside policy -> 400 bad_csr naming the problem; meanwhile the CA keeps answering", async (t) => {
  const { server, ca, client } = await setup(t);
  const legit = await cartReq();
  const cases: Array<[string, RegExp]> = [
    [hostileCsr(CART, 16384, { bits: 8192 }), /16384-bit RSA; 2048 to 4096 bits required/],
    [hostileCsr(CART, 8192, 65537), /8192-bit RSA; 2048 to 4096 bits required/],
    [hostileCsr(CART, 2048, 3), /exponent 3; only 65537 is accepted/],
    [hostileCsr(CART, 1024, 65537), /1024-bit RSA; 2048 to 4096 bits required/],
  ];
  const body = (csr: string) =>
    JSON.stringify({
      csr,
      identity: { namespace: "shop", serviceAccount: "cart" },
      pod: { namespace: "shop", name: "cart-1" },
    });
  const started = Date.now();
  const refused = cases.map(([csr]) => rawPost(server.url, ca.trustBundlePem(), body(csr)));
  // Let the hostile requests reach the CA first; the timer itself runs on the CA's event loop (same process).
  await sleep(200);
  const [bundle, signed] = await Promise.all([client.trustBundle(), client.sign(legit)]);
  const elapsed = Date.now() - started;
  t.is(bundle, ca.trustBundlePem());
  t.regex(signed.certChainPem, /BEGIN CERTIFICATE/);
  // Generous liveness bound: before the key check, the 16384-bit key with an 8192-bit exponent held the CA 104 s.
  t.true(elapsed < 5000, `bundle and a legitimate signature took ${elapsed} ms next to hostile CSRs`);
  const answers = await Promise.all(refused);
  for (const [i, [, reason]] of cases.entries()) {
    const answer = answers[i] as { status: number; body: { code?: string; message?: string } };
    t.deepEqual([answer.status, answer.body.code], [400, "bad_csr"], String(reason));
    t.regex(answer.body.message ?? "", reason);
  }
});

test("a CA that cannot be reached is reported as ca_unavailable (status 0)", async (t) => {
  const { files } = await setup(t);
  const client = new RemoteCertificateSource({
    url: "https://127.0.0.1:1",
    caBundleFile: files.bundle,
    tokenFile: files.token,
  });
  t.deepEqual(await refusal(client.trustBundle()), { status: 0, code: "ca_unavailable" });
});

const signBody = (csr: string, pod = "cart-1") =>
  JSON.stringify({
    csr,
    identity: { namespace: "shop", serviceAccount: "cart" },
    pod: { namespace: "shop", name: pod },
  });

test("each refusal answers its reason: 403 which check, 400 which CSR problem (an EC or Ed25519 key, a short RSA key)", async (t) => {
  const { server, ca } = await setup(t);
  const post = (body: string, token?: string) => rawPost(server.url, ca.trustBundlePem(), body, token);
  const db = JSON.stringify({
    csr: await csrFor("spiffe://cluster.local/ns/shop/sa/db"),
    identity: { namespace: "shop", serviceAccount: "db" },
    pod: { namespace: "shop", name: "db-1" },
  });
  t.like(await post(db), { status: 403, body: { code: "forbidden", reason: "other_node" } });
  t.like(await post(db, "tok-b"), { status: 200 });
  t.like(await post(signBody(await csrFor(CART), "ghost")), {
    status: 403,
    body: { code: "forbidden", reason: "pod_not_found" },
  });
  t.like(await post(signBody(await csrFor(CART), "db-1"), "tok-b"), {
    status: 403,
    body: { code: "forbidden", reason: "identity_mismatch" },
  });
  const weak: Array<[string, string, RegExp]> = [
    [await opensslCsr("ec", CART), "key_type", /CSR key is EC; only RSA/],
    [await opensslCsr("ed25519", CART), "key_type", /CSR key is Ed25519; only RSA/],
    [hostileCsr(CART, 1024, 65537), "key_size", /1024-bit RSA/],
    [hostileCsr(CART, 2048, 3), "key_exponent", /exponent 3/],
    ["garbage", "malformed", /not a PEM PKCS#10 request/],
  ];
  for (const [csr, reason, message] of weak) {
    const answer = await post(signBody(csr));
    t.like(answer, { status: 400, body: { code: "bad_csr", reason } }, reason);
    t.regex(answer.body.message ?? "", message);
  }
});

test("per-node rate limit: a node past its burst gets 429 reason node with Retry-After; another node, same address, is unaffected", async (t) => {
  const burst = 3;
  const { server, ca, lines, client } = await setup(t, { burst, ratePerSec: 0.001 });
  const post = (body: string, token?: string) => rawPost(server.url, ca.trustBundlePem(), body, token);
  const body = signBody(await csrFor(CART));
  for (let i = 0; i < burst; i++) t.like(await post(body), { status: 200 }, `request ${i + 1} of the burst`);
  // Refused before the body is looked at: not even a valid request gets through, nor does an invalid one cost more.
  const refused = await Promise.all(Array.from({ length: 20 }, (_, i) => post(i % 2 ? body : "{not json")));
  for (const answer of refused) {
    t.like(answer, { status: 429, body: { code: "rate_limited", reason: "node" } });
    t.true(Number(answer.retryAfter) >= 1, `Retry-After ${answer.retryAfter}`);
  }
  t.regex(refused[0]?.body.message ?? "", /too many certificate requests from node node-a/);
  const db = JSON.stringify({
    csr: await csrFor("spiffe://cluster.local/ns/shop/sa/db"),
    identity: { namespace: "shop", serviceAccount: "db" },
    pod: { namespace: "shop", name: "db-1" },
  });
  t.like(await post(db, "tok-b"), { status: 200 }, "node-b from the same address has its own allowance");
  const warned = lines.filter((l) => l.status === 429 && l.level === 40);
  t.is(warned.length, 1, "the episode is warned once, not 20 times");
  t.like(warned[0], { node: "node-a", reason: "node", code: "rate_limited" });
  // The agent's side reads it as rate_limited, which its certificate manager waits out (Retry-After).
  t.deepEqual(await refusal(client.sign(await cartReq())), { status: 429, code: "rate_limited" });
});

test("requests anyone can send without a token are logged once per kind an interval, never with the caller's path", async (t) => {
  const { server, ca, lines } = await setup(t);
  const bundle = ca.trustBundlePem();
  const get = (path: string) =>
    new Promise<number>((resolve) => {
      request(`${server.url}${path}`, { ca: bundle }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      }).end();
    });
  const statuses = await Promise.all(Array.from({ length: 300 }, (_, i) => get(`/hostile-${i}-${"x".repeat(200)}`)));
  t.deepEqual(new Set(statuses), new Set([404]));
  for (let i = 0; i < 50; i++) await rawPost(server.url, bundle, "{}", `forged-${i}`);
  const refused = lines.filter((l) => l.msg === "CA request refused");
  t.is(refused.filter((l) => l.status === 404).length, 1, "300 unknown paths: one line");
  t.is(refused.filter((l) => l.status === 401).length, 1, "50 bad tokens: one line");
  t.false(JSON.stringify(lines).includes("hostile-"), "no caller-chosen path in any line");
  t.like(
    refused.find((l) => l.status === 404),
    { path: "other" },
  );
});
