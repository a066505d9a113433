import test from "ava";
import { meshFor } from "./support/agents.js";
import { clusterFor } from "./support/cluster.js";
import { answerIn, closeServer, request } from "./support/sockets.js";

const meshed = { "ambit.dev/mesh": "enabled" };

test("meshed pods talk over HBONE, same node and across nodes; non-meshed pods pass through", async (t) => {
  const cluster = await clusterFor(t, {
    nodes: [
      { name: "n1", pods: [{ name: "a", labels: meshed, serviceAccount: "sa-a" }, { name: "c" }] },
      { name: "n2", pods: [{ name: "b", labels: meshed, serviceAccount: "sa-b" }] },
    ],
  });
  const a = cluster.pod("a");
  const b = cluster.pod("b");
  const c = cluster.pod("c");
  const servers = [
    answerIn(b.netnsPath, b.ipv4, 8080, (s) => `b saw ${s.remoteAddress}`),
    answerIn(c.netnsPath, c.ipv4, 8080, (s) => `c saw ${s.remoteAddress}`),
    answerIn(a.netnsPath, a.ipv4, 8080, (s) => `a saw ${s.remoteAddress}`),
  ];
  t.teardown(() => Promise.all(servers.map(closeServer)));
  // One data-plane worker: sessions are pooled per worker, and the count below pins down one pool's reuse.
  const mesh = await meshFor(t, cluster, { workers: 1 });
  t.is(mesh.agents[0]?.redirector.enrolled().length, 1);
  // A's certificate is in the worker, but its OpenSSL context is built by the first connection that needs it.
  t.deepEqual(await mesh.agents[0]?.proxy.tlsContexts(), [0], "no TLS context before a mesh connection");

  // Meshed inbound is delivered from inside the destination pod, from the caller's address (caller-address.test.ts).
  t.is(await request(a.netnsPath, b.ipv4, 8080, "hi"), `b saw ${a.ipv4}`, "a -> b across nodes");
  t.is(await request(b.netnsPath, a.ipv4, 8080), `a saw ${b.ipv4}`, "b -> a across nodes");
  t.is(await request(a.netnsPath, c.ipv4, 8080), `c saw ${a.ipv4}`, "a -> c (not meshed) passes through from a's IP");
  t.is(await request(c.netnsPath, a.ipv4, 8080), `a saw ${c.ipv4}`, "c -> a plaintext under PERMISSIVE");
  t.is(await mesh.agents[0]?.proxy.pooledSessions(), 1);
  t.deepEqual(await mesh.agents[0]?.proxy.tlsContexts(), [1], "one context for a's identity, both directions");
});
