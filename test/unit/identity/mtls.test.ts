import { once } from "node:events";
import { connect, createSecureContext, createServer, type TLSSocket } from "node:tls";
import test from "ava";
import { MeshCa } from "../../../agent/identity/ca.js";
import { parseTrustBundle, validateTlsPeer } from "../../../agent/identity/validate.js";
import {
  forgeCert,
  issue,
  mtlsConnect,
  newCa,
  secondsFromNow,
  sid,
  startMtlsServer,
  TD,
  type Workload,
} from "./helpers.js";

const ctxOf = (w: Workload) => createSecureContext({ key: w.keys.privateKeyPem, cert: w.chainPem, ca: w.bundlePem });

test("mTLS between two identities: each side reads the other's SPIFFE ID", async (t) => {
  const ca = await newCa();
  const [client, server] = await Promise.all([issue(ca, sid("shop", "cart")), issue(ca, sid("shop", "db"))]);
  const bundle = parseTrustBundle(ca.trustBundlePem());
  const seen = new Promise<unknown>((resolve) => {
    void startMtlsServer(
      () => ctxOf(server),
      (s) => {
        resolve(validateTlsPeer(s, { trustDomain: TD, trustBundle: bundle, peerRole: "client" }));
        s.end("hello from db");
      },
    ).then(({ server: srv, port }) => {
      t.teardown(() => srv.close());
      void mtlsConnect(port, ctxOf(client)).then(async (sock) => {
        t.deepEqual(validateTlsPeer(sock, { trustDomain: TD, trustBundle: bundle, peerRole: "server" }), {
          ok: true,
          id: sid("shop", "db"),
        });
        const [data] = await once(sock, "data");
        t.is(String(data), "hello from db");
        sock.destroy();
      });
    });
  });
  t.deepEqual(await seen, { ok: true, id: sid("shop", "cart") });
});

/** Through a real tls.Server, where Node records OpenSSL's verdict in authorizationError. */
async function serverVerdict(serverW: Workload, clientOpts: { key?: string; cert?: string }) {
  const verdict = new Promise<ReturnType<typeof validateTlsPeer>>((resolve) => {
    const srv = createServer(
      {
        key: serverW.keys.privateKeyPem,
        cert: serverW.chainPem,
        ca: serverW.bundlePem,
        requestCert: true,
        rejectUnauthorized: false,
      },
      (s: TLSSocket) => {
        resolve(validateTlsPeer(s, { trustDomain: TD, trustBundle: serverW.bundlePem }));
        s.destroy();
        srv.close();
      },
    ).listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      connect({ host: "127.0.0.1", port, rejectUnauthorized: false, ...clientOpts }).on("error", () => {});
    });
  });
  return verdict;
}

test("OpenSSL's verdicts map to reasons: foreign CA, self-signed, expired, not yet valid, no certificate", async (t) => {
  const root = await MeshCa.generateRoot(TD);
  const ca = new MeshCa(root, { trustDomain: TD });
  const server = await issue(ca, sid("shop", "db"));
  const foreign = await issue(await newCa(), sid("shop", "cart"));
  const signedByRoot = (nb: number, na: number) =>
    forgeCert({
      keys: foreign.keys,
      issuer: { keyPem: root.keyPem, certPem: root.certPem },
      uris: ["spiffe://cluster.local/ns/shop/sa/cart"],
      notBefore: secondsFromNow(nb),
      notAfter: secondsFromNow(na),
    });
  const selfSigned = forgeCert({
    keys: foreign.keys,
    uris: ["spiffe://cluster.local/ns/shop/sa/cart"],
    notBefore: secondsFromNow(-60),
    notAfter: secondsFromNow(60),
  });
  const key = foreign.keys.privateKeyPem;
  const cases: Array<[string, { key?: string; cert?: string }, string, string]> = [
    ["foreign CA", { key, cert: foreign.chainPem }, "unknown_ca", "UNABLE_TO_VERIFY_LEAF_SIGNATURE"],
    ["self-signed", { key, cert: selfSigned }, "unknown_ca", "DEPTH_ZERO_SELF_SIGNED_CERT"],
    ["expired", { key, cert: signedByRoot(-3600, -5) }, "expired", "CERT_HAS_EXPIRED"],
    ["not yet valid", { key, cert: signedByRoot(600, 3600) }, "not_yet_valid", "CERT_NOT_YET_VALID"],
  ];
  for (const [what, clientOpts, reason, detail] of cases) {
    t.like(await serverVerdict(server, clientOpts), { ok: false, reason, detail }, what);
  }
  t.like(await serverVerdict(server, {}), { ok: false, reason: "no_certificate" });
});

test("a per-connection server TLSSocket (no recorded verdict) still rejects a foreign CA by re-validating", async (t) => {
  const ca = await newCa();
  const server = await issue(ca, sid("shop", "db"));
  const foreign = await issue(await newCa(), sid("shop", "cart"));
  const verdict = new Promise<unknown>((resolve) => {
    void startMtlsServer(
      () => ctxOf(server),
      (s) => {
        resolve(validateTlsPeer(s, { trustDomain: TD, trustBundle: server.bundlePem }));
        s.destroy();
      },
    ).then(({ server: srv, port }) => {
      t.teardown(() => srv.close());
      connect({ host: "127.0.0.1", port, rejectUnauthorized: false, secureContext: ctxOf(foreign) }).on(
        "error",
        () => {},
      );
    });
  });
  t.like(await verdict, { ok: false, reason: "unknown_ca" });
});
