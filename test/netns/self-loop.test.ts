/**
 * A connection that reaches one of the agent's in-pod listeners without being redirected has the listener itself
 * as its original destination. Dialling that from inside the pod used to land on the same listener again, nesting
 * until the agent ran out of descriptors. Such destinations, and the listener ports as HBONE CONNECT targets, are
 * refused, counted, and logged once per interval.
 */
import { readdirSync } from "node:fs";
import http2 from "node:http2";
import tls from "node:tls";
import test, { type ExecutionContext } from "ava";
import { MeshCa } from "../../agent/identity/ca.js";
import { createCsrPem } from "../../agent/identity/csr.js";
import { generateRsaKeyPair } from "../../agent/identity/keys.js";
import { formatSpiffeId } from "../../agent/identity/spiffe.js";
import { connectInNetns } from "../../native-bindings/sockets.js";
import { capturingLogger } from "../support/log-lines.js";
import { clusterFor } from "./support/cluster.js";
import { nodeFor, recorder } from "./support/components.js";
import { LOGGERS_PER_NODE } from "./support/data-path.js";
import { answerIn, closeServer, request } from "./support/sockets.js";

const meshed = { "ambit.dev/mesh": "enabled" };
const TD = "cluster.local";
const openFds = () => readdirSync("/proc/self/fd").length;

async function setup(t: ExecutionContext) {
  const cluster = await clusterFor(t, {
    ipv6: true,
    nodes: [
      { name: "n1", pods: [{ name: "a", labels: meshed }, { name: "outsider" }] },
      { name: "n2", pods: [{ name: "b", labels: meshed }] },
    ],
  });
  const ca = new MeshCa(await MeshCa.generateRoot(TD), { trustDomain: TD });
  const events = recorder();
  const { logger, lines } = capturingLogger("info");
  const state = cluster.clusterState();
  const n1 = await nodeFor(t, { nodeName: "n1", ca, state, observer: events.observer, logger });
  const n2 = await nodeFor(t, { nodeName: "n2", ca, state, observer: events.observer, logger });
  const reported = async () => {
    await Promise.all([n1.proxy.reported(), n2.proxy.reported()]);
  };
  const b = cluster.pod("b");
  const app = answerIn(b.netnsPath, b.ipv4, 8080, () => "hello from b");
  t.teardown(() => closeServer(app));
  return { cluster, ca, events, lines, reported, a: cluster.pod("a"), b, outsider: cluster.pod("outsider") };
}

// Serial: it counts this process's descriptors, and the other test's agents (worker threads, listeners, namespace
// descriptors) starting beside it would be counted too (a CI run saw 99 -> 122).
test.serial("connections straight to a pod's listeners or to its loopback are reset, never dialled", async (t) => {
  const { events, lines, reported, a, b, outsider } = await setup(t);
  const before = openFds();
  const attempts: Array<{ from: string; address: string; port: number; reason: string; pod: string }> = [
    // Anyone, in plaintext, to a meshed pod's plaintext listener (PERMISSIVE delivers plaintext).
    { from: outsider.netnsPath, address: b.ipv4, port: 15006, reason: "agent_port", pod: "default/b" },
    { from: outsider.netnsPath, address: b.ipv6 as string, port: 15006, reason: "agent_port", pod: "default/b" },
    // Any app, to its own pod's outbound listener: no capability needed, also under STRICT.
    { from: a.netnsPath, address: "127.0.0.1", port: 15001, reason: "loopback_destination", pod: "default/a" },
    { from: a.netnsPath, address: "::1", port: 15001, reason: "loopback_destination", pod: "default/a" },
    // An app to its own pod's plaintext listener.
    { from: a.netnsPath, address: a.ipv4, port: 15006, reason: "agent_port", pod: "default/a" },
  ];
  for (const { from, address, port } of attempts) {
    for (let i = 0; i < 10; i++) {
      await t.throwsAsync(request(from, address, port, "x"), { code: "ECONNRESET" }, `${address}:${port}`);
    }
  }
  await reported();
  for (const { address, port, reason, pod } of attempts) {
    t.true(
      events.events.refused.some((r) => r.reason === reason && r.pod === pod),
      `${address}:${port} counted as ${reason}`,
    );
  }
  t.is(events.events.refused.length, attempts.length * 10, "one refusal per connection, no nesting");
  t.is(events.events.opened.length, 0, "nothing was relayed");
  t.true(openFds() - before < 20, `descriptors stay flat (before ${before}, after ${openFds()})`);
  // Logged once per pod, direction and reason in an interval (by each data-plane worker), not once per connection.
  const logged = lines.filter((l) => l.reason === "agent_port" || l.reason === "loopback_destination");
  const kinds = new Set(logged.map((l) => `${l.pod}|${l.reason}|${l.msg}`));
  t.is(kinds.size, 3, "default/b inbound agent_port, default/a outbound loopback, default/a inbound agent_port");
  t.true(logged.length <= 3 * LOGGERS_PER_NODE, `${logged.length} lines`);
  t.is(await request(a.netnsPath, b.ipv4, 8080), "hello from b", "meshed traffic unaffected");
});

test("HBONE CONNECT to one of the destination's listener ports is refused with 403", async (t) => {
  const { ca, events, lines, reported, b, outsider } = await setup(t);
  const keys = await generateRsaKeyPair();
  const id = { trustDomain: TD, namespace: "default", serviceAccount: "peer" };
  const cert = ca.signCsr(createCsrPem(keys, formatSpiffeId(id)), id);
  const socket = tls.connect({
    socket: await connectInNetns(outsider.netnsPath, { address: b.ipv4, port: 15008, mark: 0 }),
    key: keys.privateKeyPem,
    cert: cert.certChainPem,
    ALPNProtocols: ["h2"],
    rejectUnauthorized: false,
    servername: "hbone",
  });
  const session = http2.connect(`https://${b.ipv4}:15008`, { createConnection: () => socket });
  t.teardown(() => session.destroy());
  const status = (authority: string) =>
    new Promise<number>((resolve, reject) => {
      const s = session.request({ ":method": "CONNECT", ":authority": authority });
      s.on("response", (h) => resolve(Number(h[":status"])));
      s.on("error", reject);
    });
  const before = openFds();
  for (const port of [15001, 15006, 15008]) {
    t.is(await status(`${b.ipv4}:${port}`), 403, `${port}`);
    t.is(await status(`[${b.ipv6}]:${port}`), 403, `[v6]:${port}`);
  }
  await reported();
  t.is(events.events.refused.filter((r) => r.reason === "agent_port").length, 6);
  // One session, so one worker: logged once.
  t.is(lines.filter((l) => l.reason === "agent_port").length, 1, "logged once");
  t.true(openFds() - before < 10);
  t.is(await status(`${b.ipv4}:8080`), 200, "the same session still carries a valid CONNECT");
});
