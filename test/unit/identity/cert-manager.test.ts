import type { X509Certificate } from "node:crypto";
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { connect, createSecureContext, createServer } from "node:tls";
import test from "ava";
import { MeshCa } from "../../../agent/identity/ca.js";
import { CertManager } from "../../../agent/identity/cert-manager.js";
import {
  type CertificateSource,
  EmbeddedCertificateSource,
  type SignRequest,
} from "../../../agent/identity/certificate-source.js";
import { IdentityError } from "../../../agent/identity/errors.js";
import { MESH_TLS } from "../../../agent/identity/tls-policy.js";
import { issue, mtlsConnect, newCa, sid, startMtlsServer, TD } from "./helpers.js";

/** The embedded CA, with a switch to make it fail (CA down) and a count of sign calls. */
class FlakySource implements CertificateSource {
  calls = 0;
  down = false;
  constructor(private readonly inner: CertificateSource) {}
  async sign(req: SignRequest) {
    this.calls += 1;
    if (this.down) throw new IdentityError("ca_unavailable", "CA is down (test)");
    return this.inner.sign(req);
  }
  trustBundle() {
    return this.inner.trustBundle();
  }
}

const fast = { retry: { initialMs: 100, maxMs: 400 }, jitter: 0 };
const pod = (name: string, namespace = "shop") => ({ namespace, name });

async function manager(lifetimeSec: number) {
  const source = new FlakySource(new EmbeddedCertificateSource(await newCa(lifetimeSec)));
  const mgr = new CertManager({ source, ...fast });
  return { source, mgr };
}

test("one certificate per identity, shared by its pods and fetched once; removed with the last pod", async (t) => {
  const { source, mgr } = await manager(3600);
  t.teardown(() => mgr.close());
  const cart = sid("shop", "cart");
  await Promise.all([
    mgr.acquire(cart, pod("cart-1")),
    mgr.acquire(cart, pod("cart-2")),
    mgr.acquire(cart, pod("cart-1")),
  ]);
  t.is(source.calls, 1);
  const ctx = mgr.secureContext(cart);
  t.truthy(ctx);
  await mgr.acquire(sid("shop", "db"), pod("db-1"));
  t.is(source.calls, 2);
  t.is(mgr.secureContext(cart), ctx, "the SecureContext is reused, not rebuilt per call");
  const snap = mgr.snapshot().find((s) => s.spiffeId.endsWith("/sa/cart"));
  t.like(snap, { state: "ready", pods: ["shop/cart-1", "shop/cart-2"] });
  t.is(snap?.serial?.length, 32);
  t.true(Date.parse(snap?.notAfter ?? "") > Date.now());
  mgr.release(cart, pod("cart-1"));
  t.is(mgr.secureContext(cart), ctx);
  mgr.release(cart, pod("cart-2"));
  t.is(mgr.secureContext(cart), undefined);
  t.deepEqual(
    mgr.snapshot().map((s) => s.spiffeId),
    ["spiffe://cluster.local/ns/shop/sa/db"],
  );
  t.regex(await mgr.trustBundlePem(), /BEGIN CERTIFICATE/);
});

test("rotation before expiry keeps a live TLS connection working", async (t) => {
  // 6 s: renewal at ~3 s leaves room for a slow key generation when every test file runs at once.
  const { mgr } = await manager(6);
  t.teardown(() => mgr.close());
  const client = sid("shop", "cart");
  const server = sid("shop", "db");
  await Promise.all([mgr.acquire(client, pod("cart-1")), mgr.acquire(server, pod("db-1"))]);
  const { server: srv, port } = await startMtlsServer(
    () => mgr.secureContext(server),
    (s) => s.on("data", (d) => s.write(`echo:${d}`)),
  );
  t.teardown(() => srv.close());
  const ctx = mgr.secureContext(client);
  if (!ctx) return t.fail("no client context");
  const live = await mtlsConnect(port, ctx);
  t.teardown(() => live.destroy());
  const firstCert = live.getPeerX509Certificate();
  const firstSerial = firstCert?.serialNumber;
  const firstNotAfter = Date.parse(firstCert?.validTo ?? "");
  live.write("before");
  t.is(String((await once(live, "data"))[0]), "echo:before");

  const [rotated] = (await once(mgr, "rotated")) as [{ spiffeId: string; serial: string; previousSerial: string }];
  t.not(rotated.serial, rotated.previousSerial);
  // Wait for the server identity's rotation as well, then check old and new connections.
  while (mgr.snapshot().find((s) => s.spiffeId.endsWith("/sa/db"))?.serial === firstSerial) await sleep(50);
  t.true(Date.now() < firstNotAfter, "rotated before expiry");
  const next = await mtlsConnect(port, mgr.secureContext(client) ?? ctx);
  t.not(next.getPeerX509Certificate()?.serialNumber, firstSerial, "new connections get the new certificate");
  next.destroy();
  // Data after the certificate the connection was set up with has expired: established sessions are not cut.
  await sleep(Math.max(0, firstNotAfter + 1100 - Date.now()));
  live.write("after");
  t.is(String((await once(live, "data"))[0]), "echo:after", "the old connection survived the rotation");
});

test("CA down: the old certificate is served until expiry, never after; the identity then returns", async (t) => {
  // One root, two lifetimes: the managed server identity lives 4 s, the test client's certificate an hour.
  const root = await MeshCa.generateRoot(TD);
  const shortLived = new MeshCa(root, { trustDomain: TD, leafLifetimeSec: 4 });
  const client = await issue(new MeshCa(root, { trustDomain: TD }), sid("shop", "cart"));
  const clientCtx = createSecureContext({
    key: client.keys.privateKeyPem,
    cert: client.chainPem,
    ca: client.bundlePem,
  });
  const source = new FlakySource(new EmbeddedCertificateSource(shortLived));
  const mgr = new CertManager({ source, ...fast });
  t.teardown(() => mgr.close());
  const server = sid("shop", "db");
  await mgr.acquire(server, pod("db-1"));
  source.down = true;
  // The renewal (at half life) generates a key first; on a loaded machine that can outlast the expiry, so wait for
  // its failure rather than counting failures at a fixed moment.
  const renewalFailed = once(mgr, "failed");
  const { server: srv, port } = await startMtlsServer(
    () => mgr.secureContext(server),
    (s) => s.end(),
  );
  t.teardown(() => srv.close());
  const expired = once(mgr, "expired");
  let served = 0;
  let refused = 0;
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline && refused < 3) {
    const at = Date.now();
    try {
      const s = await mtlsConnect(port, clientCtx);
      const cert = s.getPeerX509Certificate() as X509Certificate;
      t.true(at < Date.parse(cert.validTo), "an expired certificate was presented");
      served += 1;
      s.destroy();
    } catch {
      refused += 1; // the proxy had no context for the identity and closed the connection: fail closed
      t.is(mgr.secureContext(server), undefined);
    }
    await sleep(100);
  }
  await expired;
  t.true(served >= 1, "the old certificate was served while the CA was down");
  t.is(refused, 3);
  await renewalFailed;
  t.pass("renewal was attempted and failed");
  t.like(
    mgr.snapshot().find((s) => s.spiffeId.endsWith("/sa/db")),
    { state: "expired", pods: ["shop/db-1"] },
  );
  source.down = false;
  await once(mgr, "issued");
  t.truthy(mgr.secureContext(server), "the identity is back once the CA is");
});

test("acquire rejects while the CA is down, keeps retrying, and the identity arrives later", async (t) => {
  const { source, mgr } = await manager(3600);
  t.teardown(() => mgr.close());
  source.down = true;
  const id = sid("shop", "cart");
  const err = await t.throwsAsync(mgr.acquire(id, pod("cart-1")), { instanceOf: IdentityError });
  t.is((err as IdentityError).code, "ca_unavailable");
  t.like(mgr.snapshot()[0], { state: "pending", lastError: "CA is down (test)" });
  source.down = false;
  await once(mgr, "issued");
  t.truthy(mgr.secureContext(id));
});

test("a certificate the CA got wrong is never installed", async (t) => {
  const ca = await newCa(3600);
  const wrong = await issue(ca, sid("shop", "someone-else"));
  const source: CertificateSource = {
    sign: async () => ({ certChainPem: wrong.chainPem, trustBundlePem: wrong.bundlePem }),
    trustBundle: async () => wrong.bundlePem,
  };
  const mgr = new CertManager({ source, ...fast });
  t.teardown(() => mgr.close());
  const err = await t.throwsAsync(mgr.acquire(sid("shop", "cart"), pod("cart-1")));
  t.regex(err?.message ?? "", /unusable certificate: it names spiffe:\/\/cluster.local\/ns\/shop\/sa\/someone-else/);
  t.is(mgr.secureContext(sid("shop", "cart")), undefined);
});

test("close drops everything and refuses new work", async (t) => {
  const { mgr } = await manager(3600);
  await mgr.acquire(sid("shop", "cart"), pod("cart-1"));
  mgr.close();
  t.is(mgr.secureContext(sid("shop", "cart")), undefined);
  t.deepEqual(mgr.snapshot(), []);
  const err = await t.throwsAsync(mgr.acquire(sid("shop", "cart"), pod("cart-1")));
  t.is((err as IdentityError).code, "closed");
});

test("certificate contexts speak TLS 1.3 with AES-128-GCM, also when a server picks them per handshake (SNI)", async (t) => {
  const { mgr } = await manager(3600);
  t.teardown(() => mgr.close());
  const [a, b] = [sid("shop", "a"), sid("shop", "b")];
  await mgr.acquire(a, pod("a-1"));
  await mgr.acquire(b, pod("b-1"));
  // As the HBONE server does it: a tls.Server whose certificate context comes from SNICallback. Switching contexts
  // there swaps only the certificate, so the server's own options must carry the cipher order too.
  const server = createServer({
    ...MESH_TLS,
    SNICallback: (_name, done) => done(null, mgr.secureContext(b)),
    requestCert: true,
    rejectUnauthorized: false,
  });
  server.on("secureConnection", (s) => s.end());
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  t.teardown(() => server.close());
  const socket = connect({
    host: "127.0.0.1",
    port: (server.address() as { port: number }).port,
    servername: "hbone",
    secureContext: mgr.secureContext(a),
    rejectUnauthorized: false,
  });
  t.teardown(() => socket.destroy());
  await once(socket, "secureConnect");
  t.is(socket.getProtocol(), "TLSv1.3");
  t.is(socket.getCipher().standardName, "TLS_AES_128_GCM_SHA256");
});
