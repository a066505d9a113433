import test from "ava";
import { meshFor } from "./support/agents.js";
import { clusterFor } from "./support/cluster.js";
import { closeServer } from "./support/sockets.js";
import { transfer, transferServer } from "./support/transfer.js";

const meshed = { "ambit.dev/mesh": "enabled" };
const MiB = 1024 * 1024;

test("bytes arrive intact both ways over HBONE, same node and across nodes (1 B, 1 MiB, 100 MiB)", async (t) => {
  t.timeout(90_000);
  const cluster = await clusterFor(t, {
    nodes: [
      {
        name: "n1",
        pods: [
          { name: "a", labels: meshed, serviceAccount: "sa-a" },
          { name: "near", labels: meshed },
        ],
      },
      { name: "n2", pods: [{ name: "b", labels: meshed, serviceAccount: "sa-b" }] },
    ],
  });
  const a = cluster.pod("a");
  const b = cluster.pod("b");
  const near = cluster.pod("near");
  const servers = [transferServer(b.netnsPath, b.ipv4, 9000), transferServer(near.netnsPath, near.ipv4, 9000)];
  t.teardown(() => Promise.all(servers.map(closeServer)));
  // One data-plane worker: sessions are pooled per worker, and the count below pins down one pool's reuse.
  const mesh = await meshFor(t, cluster, { workers: 1 });
  for (const [name, target] of [
    ["across nodes", b],
    ["same node", near],
  ] as const) {
    for (const size of [1, MiB, 100 * MiB]) {
      await transfer(a.netnsPath, target.ipv4, 9000, size, size);
      t.pass(`${name}: ${size} bytes each way`);
    }
  }
  t.is(await mesh.agents[0]?.proxy.pooledSessions(), 2, "one pooled HBONE session per destination");
});

test("1000 concurrent connections through one agent pair all complete", async (t) => {
  t.timeout(90_000);
  const cluster = await clusterFor(t, {
    nodes: [
      { name: "n1", pods: [{ name: "a", labels: meshed }] },
      { name: "n2", pods: [{ name: "b", labels: meshed }] },
    ],
  });
  const a = cluster.pod("a");
  const b = cluster.pod("b");
  const server = transferServer(b.netnsPath, b.ipv4, 9000);
  t.teardown(() => closeServer(server));
  await meshFor(t, cluster);
  const results = await Promise.allSettled(
    Array.from({ length: 1000 }, (_, i) => transfer(a.netnsPath, b.ipv4, 9000, 1000 + i, 2000)),
  );
  const failed = results.filter((r) => r.status === "rejected");
  t.is(
    failed.length,
    0,
    failed
      .slice(0, 3)
      .map((f) => String((f as PromiseRejectedResult).reason))
      .join("; "),
  );
});
