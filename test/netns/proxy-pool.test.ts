/**
 * The HBONE pool over time, on real namespaces: sessions follow the identity the workload index expects, go away
 * when idle or when their source pod leaves, and a peer that goes silent is noticed and replaced.
 */
import test, { type ExecutionContext } from "ava";
import { MeshCa } from "../../agent/identity/ca.js";
import type { HboneTuning } from "../../agent/proxy/tuning.js";
import { inNetns } from "../../native-bindings/netns.js";
import { runNftJson } from "../../native-bindings/nftables.js";
import { waitFor } from "../bench/support.js";
import { withPod } from "../support/cluster-state.js";
import { clusterFor } from "./support/cluster.js";
import { nodeFor, recorder } from "./support/components.js";
import { answerIn, closeServer, request } from "./support/sockets.js";

const meshed = { "ambit.dev/mesh": "enabled" };
const TD = "cluster.local";

async function setup(t: ExecutionContext, tuning: Partial<HboneTuning> = {}) {
  const cluster = await clusterFor(t, {
    nodes: [
      { name: "n1", pods: [{ name: "a", labels: meshed, serviceAccount: "sa-a" }] },
      { name: "n2", pods: [{ name: "b", labels: meshed, serviceAccount: "sa-b" }] },
    ],
  });
  const ca = new MeshCa(await MeshCa.generateRoot(TD), { trustDomain: TD });
  const state = cluster.clusterState([]);
  const a = cluster.pod("a");
  const b = cluster.pod("b");
  const app = answerIn(b.netnsPath, b.ipv4, 8080, () => "hello from b");
  t.teardown(() => closeServer(app));
  const client = recorder();
  // One data-plane worker: sessions are pooled per worker, and these tests pin down one pool's reuse.
  const n1 = await nodeFor(t, { nodeName: "n1", ca, state, tuning, observer: client.observer, workers: 1 });
  await nodeFor(t, { nodeName: "n2", ca, state, tuning });
  const get = () => request(a.netnsPath, b.ipv4, 8080, "hi");
  return { cluster, state, a, b, n1, client, get };
}

test("a pooled session is not reused once the index expects another identity at its IP", async (t) => {
  const { state, n1, client, get } = await setup(t);
  t.is(await get(), "hello from b");
  t.is(await n1.proxy.pooledSessions(), 1);

  // b's IP now belongs (as n1 sees it) to a workload running as sa-other; b's agent still holds sa-b.
  const moved = withPod(state, "default/b", (p) => ({ ...p, serviceAccount: "sa-other" }));
  n1.agent.apply(moved);
  await t.throwsAsync(get(), { code: "ECONNRESET" });
  await n1.proxy.reported();
  t.true(client.events.handshakes.some((h) => h.result === "identity_mismatch"));

  n1.agent.apply(state);
  t.is(await get(), "hello from b");
  await n1.proxy.reported();
  t.is(
    client.events.handshakes.filter((h) => h.role === "client" && h.result === "ok").length,
    1,
    "the session verified for sa-b serves sa-b again, without a new handshake",
  );
});

test("a pooled session without streams is closed after the idle time; the next connection opens a new one", async (t) => {
  const { n1, client, get } = await setup(t, { poolIdleMs: 300 });
  t.is(await get(), "hello from b");
  await waitFor("the idle session to close", async () => (await n1.proxy.pooledSessions()) === 0, 15_000);
  t.is(await get(), "hello from b");
  await n1.proxy.reported();
  t.is(client.events.handshakes.filter((h) => h.role === "client" && h.result === "ok").length, 2);
});

test("a pod leaving the mesh closes the sessions it opened", async (t) => {
  const { state, n1, get } = await setup(t);
  t.is(await get(), "hello from b");
  t.is(await n1.proxy.pooledSessions(), 1);
  n1.agent.apply(withPod(state, "default/a", (p) => ({ ...p, labels: {} })));
  t.is(n1.redirector.enrolled().length, 0);
  await waitFor("a's sessions to close", async () => (await n1.proxy.pooledSessions()) === 0, 15_000);
});

test("a peer that goes silent is noticed: its session is dropped, new connections fail fast, then recover", async (t) => {
  const { b, n1, get } = await setup(t, { peerTimeoutMs: 1500, handshakeTimeoutMs: 1500 });
  t.is(await get(), "hello from b");
  t.is(await n1.proxy.pooledSessions(), 1);

  // Drop what reaches b's HBONE port inside b's namespace: the session's peer simply stops answering.
  const table = { family: "inet", name: "blackhole" };
  inNetns(b.netnsPath, () =>
    runNftJson({
      nftables: [
        { add: { table } },
        { add: { chain: { ...table, table: table.name, name: "in", type: "filter", hook: "input", prio: -400 } } },
        {
          add: {
            rule: {
              ...table,
              table: table.name,
              chain: "in",
              expr: [
                { match: { op: "==", left: { payload: { protocol: "tcp", field: "dport" } }, right: 15008 } },
                { drop: null },
              ],
            },
          },
        },
      ],
    }),
  );
  const restore = () => inNetns(b.netnsPath, () => runNftJson({ nftables: [{ delete: { table } }] }));
  let restored = false;
  t.teardown(() => {
    if (!restored) restore();
  });
  const dropped = Date.now();
  await waitFor("keepalive to drop the silent session", async () => (await n1.proxy.pooledSessions()) === 0, 15_000);
  t.log(`session dropped ${Date.now() - dropped} ms after the peer went silent`);

  // A new connection meets a peer that never answers its SYN: refused once the connect timeout passes.
  const started = Date.now();
  await t.throwsAsync(get(), { code: "ECONNRESET" });
  t.true(Date.now() - started < 10_000, `refused after ${Date.now() - started} ms`);

  restore();
  restored = true;
  t.is(await get(), "hello from b");
});
