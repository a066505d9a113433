import { mkdtempSync, rmSync } from "node:fs";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import test, { type ExecutionContext } from "ava";
import { MeshCa } from "../../agent/identity/ca.js";
import { createCsrPem } from "../../agent/identity/csr.js";
import { generateRsaKeyPair } from "../../agent/identity/keys.js";
import { formatSpiffeId } from "../../agent/identity/spiffe.js";
import { connectInNetns } from "../../native-bindings/sockets.js";
import { peerAuthentication, withPod } from "../support/cluster-state.js";
import { ALPN_H2_ONLY, startCapture } from "./support/capture.js";
import { clusterFor } from "./support/cluster.js";
import { nodeFor, recorder } from "./support/components.js";
import { answerIn, closeServer, request } from "./support/sockets.js";

const meshed = { "ambit.dev/mesh": "enabled" };
const TD = "cluster.local";

async function setup(t: ExecutionContext, strict = false) {
  const cluster = await clusterFor(t, {
    nodes: [
      { name: "n1", pods: [{ name: "a", labels: meshed, serviceAccount: "sa-a" }, { name: "c" }] },
      { name: "n2", pods: [{ name: "b", labels: meshed, serviceAccount: "sa-b" }] },
    ],
  });
  const ca = new MeshCa(await MeshCa.generateRoot(TD), { trustDomain: TD });
  const state = cluster.clusterState([], strict ? [peerAuthentication("default", "STRICT")] : []);
  const b = cluster.pod("b");
  const app = answerIn(b.netnsPath, b.ipv4, 8080, () => "hello from b");
  t.teardown(() => closeServer(app));
  return { cluster, ca, state, a: cluster.pod("a"), b, c: cluster.pod("c") };
}

test("only TLS with ALPN h2 crosses the wire between meshed pods; plaintext from a non-meshed pod is visible", async (t) => {
  const { cluster, ca, state, a, b, c } = await setup(t);
  await nodeFor(t, { nodeName: "n1", ca, state });
  await nodeFor(t, { nodeName: "n2", ca, state });
  const dir = mkdtempSync(join(tmpdir(), "ambit-cap-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const stop = await startCapture(cluster.node("n2").netnsName, b.hostInterface, join(dir, "b.pcap"));
  t.is(await request(a.netnsPath, b.ipv4, 8080, "SECRET-MESH-MARKER-1c9f"), "hello from b");
  t.is(await request(c.netnsPath, b.ipv4, 8080, "CONTROL-PLAIN-MARKER-77ab"), "hello from b");
  const wire = await stop("CONTROL-PLAIN-MARKER-77ab");
  t.true(wire.includes("CONTROL-PLAIN-MARKER-77ab"), "the capture sees payloads");
  t.false(wire.includes("SECRET-MESH-MARKER-1c9f"), "the meshed payload never appears in plaintext");
  t.true(wire.includes(ALPN_H2_ONLY), "the HBONE ClientHello offers h2");
});

test("the destination sees the client's SPIFFE identity; a destination with the wrong identity is refused", async (t) => {
  const { ca, state, a, b } = await setup(t);
  const server = recorder();
  const client = recorder();
  // n1 believes b runs as sa-expected; b's agent holds b's real identity, sa-b.
  const lied = withPod(state, "default/b", (p) => ({ ...p, serviceAccount: "sa-expected" }));
  const n1 = await nodeFor(t, { nodeName: "n1", ca, state: lied, observer: client.observer });
  const n2 = await nodeFor(t, { nodeName: "n2", ca, state, observer: server.observer });
  await t.throwsAsync(request(a.netnsPath, b.ipv4, 8080, "x"), { code: "ECONNRESET" });
  await Promise.all([n1.proxy.reported(), n2.proxy.reported()]);
  t.true(client.events.handshakes.some((h) => h.role === "client" && h.result === "identity_mismatch"));
  t.is(server.events.opened.length, 0, "nothing reached b's app");

  // b -> a is fine (n2 expects a's real identity), and a's agent sees b's.
  const appA = answerIn(a.netnsPath, a.ipv4, 8080, () => "hello from a");
  t.teardown(() => closeServer(appA));
  t.is(await request(b.netnsPath, a.ipv4, 8080), "hello from a");
  await n1.proxy.reported();
  const inbound = client.events.opened.find((o) => o.reporter === "destination");
  t.is(inbound?.source.principal, `spiffe://${TD}/ns/default/sa/sa-b`);
  t.is(inbound?.destination.principal, `spiffe://${TD}/ns/default/sa/sa-a`);
  t.true(inbound?.tls);
  t.truthy(n2);
});

test("STRICT refuses plaintext from a non-meshed pod while meshed traffic flows; outbound to non-meshed passes", async (t) => {
  const { ca, state, a, b, c } = await setup(t, true);
  const events = recorder();
  await nodeFor(t, { nodeName: "n1", ca, state });
  const n2 = await nodeFor(t, { nodeName: "n2", ca, state, observer: events.observer });
  await t.throwsAsync(request(c.netnsPath, b.ipv4, 8080, "x"), { code: "ECONNRESET" });
  await n2.proxy.reported();
  t.deepEqual(events.events.refused, [{ pod: "default/b", direction: "inbound", reason: "plaintext_strict" }]);
  t.is(await request(a.netnsPath, b.ipv4, 8080), "hello from b");
  const appC = answerIn(c.netnsPath, c.ipv4, 8080, () => "hello from c");
  t.teardown(() => closeServer(appC));
  t.is(await request(a.netnsPath, c.ipv4, 8080), "hello from c");
});

test("bad input on 15008 is refused and counted while the proxy keeps serving", async (t) => {
  const { ca, state, a, b, c } = await setup(t);
  const events = recorder();
  await nodeFor(t, { nodeName: "n1", ca, state });
  const n2 = await nodeFor(t, {
    nodeName: "n2",
    ca,
    state,
    observer: events.observer,
    tuning: { handshakeTimeoutMs: 500 },
  });
  const raw = () => connectInNetns(c.netnsPath, { address: b.ipv4, port: 15008, mark: 0 });
  const closed = (s: import("node:net").Socket | tls.TLSSocket) =>
    new Promise<void>((resolve) => {
      s.on("error", () => {});
      s.on("end", () => s.end());
      s.resume();
      s.once("close", () => resolve());
    });
  const results = async () => {
    await n2.proxy.reported();
    return events.events.handshakes.filter((h) => h.role === "server").map((h) => h.result);
  };

  const garbage = await raw();
  garbage.write(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n\x16\x03\x01 random bytes"));
  await closed(garbage);
  t.true((await results()).includes("tls_error"));

  const staller = await raw();
  staller.write(Buffer.from([0x16, 0x03, 0x01, 0x02])); // a TLS record header, then silence
  await closed(staller);
  t.true((await results()).includes("timeout"));

  const anonymous = tls.connect({
    socket: await raw(),
    ALPNProtocols: ["h2"],
    rejectUnauthorized: false,
    servername: "hbone",
  });
  await closed(anonymous);
  t.true((await results()).includes("no_certificate"));

  // A client with a valid mesh identity: garbage HTTP/2, then CONNECTs to a closed port and to someone else's IP.
  const keys = await generateRsaKeyPair();
  const id = { trustDomain: TD, namespace: "default", serviceAccount: "intruder" };
  const cert = ca.signCsr(createCsrPem(keys, formatSpiffeId(id)), id);
  const valid = async () =>
    tls.connect({
      socket: await raw(),
      key: keys.privateKeyPem,
      cert: cert.certChainPem,
      ca: ca.trustBundlePem(),
      ALPNProtocols: ["h2"],
      rejectUnauthorized: false,
      servername: "hbone",
    });
  const junk = await valid();
  junk.once("secureConnect", () => junk.write("this is not an HTTP/2 preface\r\n\r\n"));
  await closed(junk);

  const socket = await valid();
  const session = http2.connect(`https://${b.ipv4}:15008`, { createConnection: () => socket });
  t.teardown(() => session.destroy());
  const status = (authority: string) =>
    new Promise<number>((resolve, reject) => {
      const s = session.request({ ":method": "CONNECT", ":authority": authority });
      s.on("response", (h) => resolve(Number(h[":status"])));
      s.on("error", reject);
    });
  t.is(await status(`${b.ipv4}:1`), 503, "closed port");
  t.is(await status(`${a.ipv4}:8080`), 403, "not this pod's IP");
  t.is(await status(`${b.ipv4}:8080`), 200, "a valid CONNECT still works on the same session");

  t.is(await request(a.netnsPath, b.ipv4, 8080), "hello from b", "meshed traffic unaffected throughout");
});
