/**
 * The app sees who called: inbound connections reach a meshed pod's app from the caller's address (HBONE: the
 * tunnel's outer address, the source pod's; plaintext: the connection's own source), through a transparent socket
 * whose replies the pod's rules and routing send back to the agent.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { meshFor } from "./support/agents.js";
import { startCapture } from "./support/capture.js";
import { clusterFor } from "./support/cluster.js";
import { answerIn, closeServer, request, serveIn } from "./support/sockets.js";

const meshed = { "ambit.dev/mesh": "enabled" };

function ipIn(netnsName: string, ...args: string[]): string {
  return execFileSync("ip", ["-n", netnsName, ...args], { encoding: "utf8" });
}

/** The policy-routing state the agent keeps in a pod: the mark's rule and the table's local routes, both families. */
function returnRouting(netnsName: string): string[] {
  return [
    ...ipIn(netnsName, "-4", "rule", "show")
      .split("\n")
      .filter((l) => l.includes("lookup 100")),
    ...ipIn(netnsName, "-6", "rule", "show")
      .split("\n")
      .filter((l) => l.includes("lookup 100")),
    // Table 100 does not exist until a route is in it: list every table and keep its lines.
    ...ipIn(netnsName, "-4", "route", "show", "table", "all")
      .split("\n")
      .filter((l) => l.includes("table 100")),
    ...ipIn(netnsName, "-6", "route", "show", "table", "all")
      .split("\n")
      .filter((l) => l.includes("table 100")),
  ]
    .map((l) => l.trim().replace(/\s+/g, " "))
    .filter((l) => l !== "");
}

test("the app sees the caller's pod IP: across nodes, same node, IPv6, plaintext PERMISSIVE; a pod calling itself sees itself", async (t) => {
  const cluster = await clusterFor(t, {
    ipv6: true,
    nodes: [
      {
        name: "n1",
        pods: [
          { name: "a", labels: { ...meshed, app: "a" }, serviceAccount: "sa-a" },
          { name: "d", labels: meshed, serviceAccount: "sa-d" },
          { name: "c" },
        ],
      },
      { name: "n2", pods: [{ name: "b", labels: meshed, serviceAccount: "sa-b" }] },
    ],
    services: [{ name: "a", selector: { app: "a" }, ports: [{ port: 80, targetPort: 8080 }] }],
  });
  const [a, b, c, d] = ["a", "b", "c", "d"].map((n) => cluster.pod(n)) as [
    ReturnType<typeof cluster.pod>,
    ReturnType<typeof cluster.pod>,
    ReturnType<typeof cluster.pod>,
    ReturnType<typeof cluster.pod>,
  ];
  const saw = (s: { remoteAddress?: string | undefined }) => `${s.remoteAddress}`;
  const servers = [a, b, d].flatMap((p) => [
    answerIn(p.netnsPath, p.ipv4, 8080, saw),
    answerIn(p.netnsPath, p.ipv6 as string, 8080, saw),
  ]);
  t.teardown(() => Promise.all(servers.map(closeServer)));
  await meshFor(t, cluster);

  t.is(await request(a.netnsPath, b.ipv4, 8080), a.ipv4, "a -> b across nodes (HBONE)");
  t.is(await request(b.netnsPath, a.ipv4, 8080), b.ipv4, "b -> a across nodes (HBONE)");
  t.is(await request(a.netnsPath, d.ipv4, 8080), a.ipv4, "a -> d on the same node (HBONE)");
  t.is(await request(a.netnsPath, b.ipv6 as string, 8080), a.ipv6 as string, "a -> b over IPv6");
  t.is(await request(c.netnsPath, a.ipv4, 8080), c.ipv4, "c (not meshed) -> a: plaintext under PERMISSIVE");
  t.is(await request(c.netnsPath, a.ipv6 as string, 8080), c.ipv6 as string, "c -> a: plaintext over IPv6");
  const vip = cluster.services.find((s) => s.name === "a")?.clusterIPs[0] as string;
  t.is(await request(a.netnsPath, vip, 80), a.ipv4, "a -> its own Service -> a: the app sees its own address");
  // Many connections from one caller at once: each gets its own source port, none loops into the agent.
  const many = await Promise.all(Array.from({ length: 200 }, () => request(c.netnsPath, a.ipv4, 8080)));
  t.deepEqual(new Set(many), new Set([c.ipv4]));
});

test("enrolling installs the return routing in the pod and unenrolling removes it; other pods have none", async (t) => {
  const cluster = await clusterFor(t, {
    ipv6: true,
    nodes: [{ name: "n1", pods: [{ name: "a", labels: meshed, serviceAccount: "sa-a" }, { name: "c" }] }],
  });
  const [a, c] = [cluster.pod("a"), cluster.pod("c")];
  t.deepEqual(returnRouting(a.netnsName), [], "nothing before the agent");
  const mesh = await meshFor(t, cluster);
  const installed = returnRouting(a.netnsName);
  t.deepEqual(
    installed.map((l) => l.replace(/^\d+:\s*/, "")),
    [
      "from all fwmark 0x111/0xfff lookup 100",
      "from all fwmark 0x111/0xfff lookup 100",
      "local default dev lo table 100 scope host",
      "local default dev lo table 100 metric 1024 pref medium",
    ],
  );
  t.true(installed[0]?.startsWith("32764:"), "the rule's priority, before the main table's");
  t.deepEqual(returnRouting(c.netnsName), [], "a pod that is not meshed is untouched");

  mesh.agents[0]?.redirector.unenroll("default/a");
  t.deepEqual(returnRouting(a.netnsName), [], "unenrolled: the rule and routes are gone with the nftables table");
});

test("a failed setup refuses: without the return route the app's handshake never leaves the pod and the caller is reset", async (t) => {
  const cluster = await clusterFor(t, {
    nodes: [
      { name: "n1", pods: [{ name: "a", labels: meshed, serviceAccount: "sa-a" }] },
      { name: "n2", pods: [{ name: "b", labels: meshed, serviceAccount: "sa-b" }] },
    ],
  });
  const [a, b] = [cluster.pod("a"), cluster.pod("b")];
  let accepted = 0;
  const app = serveIn(b.netnsPath, b.ipv4, 8080, (s) => {
    accepted++;
    s.on("error", () => {});
    s.end("hello");
  });
  t.teardown(() => closeServer(app));
  await meshFor(t, cluster);
  t.is(await request(a.netnsPath, b.ipv4, 8080), "hello", "works with the routing in place");
  accepted = 0;

  // Lose the rule behind the agent's back, as a failed or partial setup would leave the pod.
  ipIn(b.netnsName, "-4", "rule", "del", "fwmark", "0x111/0xfff", "lookup", "100");
  const dir = mkdtempSync(join(tmpdir(), "ambit-caller-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const stop = await startCapture(cluster.node("n2").netnsName, b.hostInterface, join(dir, "b.pcap"));
  const failed = await request(a.netnsPath, b.ipv4, 8080).then(
    (answer) => `answered ${JSON.stringify(answer)}`,
    (err: { code?: string }) => err.code ?? "error",
  );
  const pcap = await stop();
  t.not(failed, 'answered "hello"', "the connection is refused, not delivered from another address");
  t.is(accepted, 0, "the app never completed a connection");
  // Any packet from the app's port on the pod's interface would be the app answering the caller outside the mesh.
  const fromAppPort = Buffer.from([0x1f, 0x90]); // 8080 as a TCP source port
  t.false(
    tcpSourcePorts(pcap).some((p) => p.equals(fromAppPort)),
    "no packet from the app's port left the pod",
  );
});

/** The TCP source port of every IPv4 packet in a pcap file (Ethernet link type, as tcpdump writes on a veth). */
function tcpSourcePorts(pcap: Buffer): Buffer[] {
  const ports: Buffer[] = [];
  for (let at = 24; at + 16 <= pcap.length; ) {
    const captured = pcap.readUInt32LE(at + 8);
    const frame = pcap.subarray(at + 16, at + 16 + captured);
    at += 16 + captured;
    if (frame.length < 34 || frame.readUInt16BE(12) !== 0x0800 || frame[23] !== 6) continue;
    const ihl = ((frame[14] as number) & 0x0f) * 4;
    ports.push(frame.subarray(14 + ihl, 14 + ihl + 2));
  }
  return ports;
}
