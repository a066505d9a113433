import { closeSync, openSync } from "node:fs";
import net from "node:net";
import test from "ava";
import { MeshDataplane } from "../../agent/dataplane/mesh-dataplane.js";
import {
  type EnrollTarget,
  type ListenerFactory,
  type ListenerKind,
  Redirector,
} from "../../agent/redirect/enroller.js";
import { EnrollmentError } from "../../agent/redirect/errors.js";
import { LISTEN_BACKLOG, originalDestination, socketFd } from "../../native-bindings/sockets.js";
import { clusterFor, enrollTarget } from "./support/cluster.js";
import { ruleCount, tableExists } from "./support/nft.js";
import { serveWithNode } from "./support/node-listener.js";
import { answerIn, closeServer, request } from "./support/sockets.js";

const meshed = { "ambit.dev/mesh": "enabled" };

/** Listeners that answer with what they are and where the connection was going. */
function reportingServer(kind: ListenerKind, family: 4 | 6, { pod }: EnrollTarget): net.Server {
  return net.createServer({ allowHalfOpen: true }, (s) => {
    s.on("error", () => {});
    const dst = originalDestination(socketFd(s) as number, family);
    s.end(JSON.stringify({ kind, pod: pod.name, dst: `${dst.address}:${dst.port}`, src: s.remoteAddress }));
  });
}

const reportingFactory: ListenerFactory = (kind, family, target, fd) =>
  serveWithNode(reportingServer(kind, family, target), fd);

test("outbound TCP from an enrolled pod reaches the agent's listener with its original destination (IPv4, IPv6)", async (t) => {
  const cluster = await clusterFor(t, {
    ipv6: true,
    nodes: [{ name: "n1", pods: [{ name: "a", labels: meshed }, { name: "b" }] }],
  });
  const a = cluster.pod("a");
  const b = cluster.pod("b");
  const redirector = new Redirector();
  redirector.enroll(enrollTarget(t, cluster, "a"), reportingFactory);
  t.teardown(() => redirector.closeListenersOnly());

  const v4 = JSON.parse(await request(a.netnsPath, b.ipv4, 8080));
  t.like(v4, { kind: "outbound", pod: "a", dst: `${b.ipv4}:8080` });
  const v6 = JSON.parse(await request(a.netnsPath, b.ipv6 as string, 9090));
  t.like(v6, { kind: "outbound", dst: `${b.ipv6}:9090` });

  // Inbound to the enrolled pod from a non-enrolled one lands on the plaintext inbound listener.
  const inbound = JSON.parse(await request(b.netnsPath, a.ipv4, 7070));
  t.like(inbound, { kind: "inbound", dst: `${a.ipv4}:7070`, src: b.ipv4 });
});

test("a non-enrolled pod's traffic is untouched, and unenroll restores direct traffic", async (t) => {
  const cluster = await clusterFor(t, {
    nodes: [{ name: "n1", pods: [{ name: "a", labels: meshed }, { name: "b" }] }],
  });
  const a = cluster.pod("a");
  const b = cluster.pod("b");
  const app = answerIn(b.netnsPath, b.ipv4, 8080, () => "direct");
  t.teardown(() => closeServer(app));
  const appA = answerIn(a.netnsPath, a.ipv4, 8081, () => "a-direct");
  t.teardown(() => closeServer(appA));

  const redirector = new Redirector();
  redirector.enroll(enrollTarget(t, cluster, "a"), reportingFactory);
  t.is(await request(b.netnsPath, b.ipv4, 8080), "direct", "b talks to itself directly");
  t.like(JSON.parse(await request(a.netnsPath, b.ipv4, 8080)), { kind: "outbound" });

  redirector.unenroll("default/a");
  t.false(tableExists(a.netnsPath));
  t.is(await request(a.netnsPath, b.ipv4, 8080), "direct");
  t.is(await request(b.netnsPath, a.ipv4, 8081), "a-direct");
});

test("re-enrolling replaces the table atomically: same rules, no duplicates, traffic still captured", async (t) => {
  const cluster = await clusterFor(t, {
    nodes: [{ name: "n1", pods: [{ name: "a", labels: meshed }, { name: "b" }] }],
  });
  const a = cluster.pod("a");
  const first = new Redirector();
  first.enroll(enrollTarget(t, cluster, "a"), reportingFactory);
  const rules = ruleCount(a.netnsPath);
  // An agent that stops leaves the rules: the pod's traffic is refused, never direct.
  first.closeListenersOnly();
  await t.throwsAsync(request(a.netnsPath, cluster.pod("b").ipv4, 8080), { code: "ECONNREFUSED" });

  const second = new Redirector();
  second.enroll(enrollTarget(t, cluster, "a"), reportingFactory);
  second.enroll(enrollTarget(t, cluster, "a"), reportingFactory);
  t.teardown(() => second.closeListenersOnly());
  t.is(ruleCount(a.netnsPath), rules);
  t.like(JSON.parse(await request(a.netnsPath, cluster.pod("b").ipv4, 8080)), { kind: "outbound" });
});

test("bad input: a pod without IPs is a typed error and other pods are unaffected", async (t) => {
  const cluster = await clusterFor(t, {
    nodes: [{ name: "n1", pods: [{ name: "a", labels: meshed }, { name: "b" }] }],
  });
  const redirector = new Redirector();
  t.teardown(() => redirector.closeListenersOnly());
  redirector.enroll(enrollTarget(t, cluster, "a"), reportingFactory);
  const b = enrollTarget(t, cluster, "b");
  const noIps = { ...b, pod: { ...b.pod, ips: [] } };
  const err = t.throws(() => redirector.enroll(noIps, reportingFactory), { instanceOf: EnrollmentError });
  t.is(err?.code, "no_ips");
  t.false(tableExists(cluster.pod("b").netnsPath), "a failed enrollment leaves nothing behind");
  t.like(JSON.parse(await request(cluster.pod("a").netnsPath, cluster.pod("b").ipv4, 80)), { kind: "outbound" });
});

test("kubelet probes from the node reach an enrolled pod's app directly, not its inbound listener", async (t) => {
  const cluster = await clusterFor(t, {
    nodes: [{ name: "n1", pods: [{ name: "a", labels: meshed }, { name: "b" }] }],
  });
  const a = cluster.pod("a");
  const node = cluster.node("n1");
  const app = answerIn(a.netnsPath, a.ipv4, 8080, (s) => `app saw ${s.remoteAddress}`);
  t.teardown(() => closeServer(app));
  const redirector = new Redirector({ hostRules: node.netnsPath });
  redirector.enroll(enrollTarget(t, cluster, "a"), reportingFactory);
  t.teardown(() => {
    redirector.unenroll("default/a");
  });
  t.is(await request(node.netnsPath, a.ipv4, 8080), "app saw 169.254.7.127");
  t.like(JSON.parse(await request(cluster.pod("b").netnsPath, a.ipv4, 8080)), { kind: "inbound" });
});

test("an upgrade's new agent keeps the probe SNAT of pods the old agent enrolled and it has not reached yet", async (t) => {
  const cluster = await clusterFor(t, {
    nodes: [
      {
        name: "n1",
        pods: [
          { name: "a", labels: meshed },
          { name: "b", labels: meshed },
        ],
      },
    ],
  });
  const [a, b] = [cluster.pod("a"), cluster.pod("b")];
  const node = cluster.node("n1");
  const apps = [a, b].map((p) => answerIn(p.netnsPath, p.ipv4, 8080, (s) => `app saw ${s.remoteAddress}`));
  t.teardown(() => Promise.all(apps.map(closeServer)));
  // Targets first: each holds a namespace descriptor that its own teardown closes, after the redirectors' below.
  const [targetA, targetB] = [enrollTarget(t, cluster, "a"), enrollTarget(t, cluster, "b")];
  const old = new Redirector({ hostRules: node.netnsPath });
  old.enroll(targetA, reportingFactory);
  old.enroll(targetB, reportingFactory);
  t.teardown(() => old.closeListenersOnly());
  const successor = new Redirector({ hostRules: node.netnsPath });
  t.teardown(() => {
    successor.unenroll("default/a");
    successor.unenroll("default/b");
  });
  t.true(successor.enrolledByAnother(targetB), "b's table is the old agent's");
  t.true(successor.enrolledByAnother(targetA));
  successor.enroll(targetA, reportingFactory);
  t.is(await request(node.netnsPath, a.ipv4, 8080), "app saw 169.254.7.127");
  t.is(await request(node.netnsPath, b.ipv4, 8080), "app saw 169.254.7.127", "b's probes still skip the mesh");
  successor.unenroll("default/b");
  t.like(
    JSON.parse(await request(node.netnsPath, b.ipv4, 8080)),
    { kind: "inbound" },
    "a pod this agent lets go of leaves the table",
  );
});

test("enrollment works while the agent holds more than 1024 descriptors (libnftables uses select())", async (t) => {
  const cluster = await clusterFor(t, {
    nodes: [{ name: "n1", pods: [{ name: "a", labels: meshed }, { name: "b" }] }],
  });
  const hog = Array.from({ length: 1500 }, () => openSync("/dev/null", "r"));
  t.teardown(() => {
    for (const fd of hog) closeSync(fd);
  });
  const redirector = new Redirector();
  redirector.enroll(enrollTarget(t, cluster, "a"), reportingFactory);
  t.teardown(() => redirector.unenroll("default/a"));
  t.like(JSON.parse(await request(cluster.pod("a").netnsPath, cluster.pod("b").ipv4, 80)), { kind: "outbound" });
});

test("the pod's listeners keep their full accept queue once the data plane serves them", async (t) => {
  const cluster = await clusterFor(t, {
    ipv6: true,
    nodes: [{ name: "n1", pods: [{ name: "a", labels: meshed }] }],
  });
  const dataplane = new MeshDataplane({
    trustDomain: "cluster.local",
    certs: { material: () => undefined, on: () => {} },
  });
  t.teardown(() => dataplane.close());
  const redirector = new Redirector();
  redirector.enroll(enrollTarget(t, cluster, "a"), dataplane.listenerFactory);
  t.teardown(() => redirector.unenroll("default/a"));
  // Every listener handed over is being served once the worker answered a later message.
  await dataplane.reported();
  // ss prints a listener's accept-queue limit in its Send-Q column.
  const { stdout } = await cluster.exec(cluster.pod("a").netnsName, "ss", ["-ltnH"]);
  const queues = stdout
    .trim()
    .split("\n")
    .map((line) => line.trim().split(/\s+/))
    .map(([, , limit, local]) => ({ local, limit: Number(limit) }));
  t.is(queues.length, 6, "15001, 15006 and 15008, both families");
  t.deepEqual(
    queues.filter((q) => q.limit !== LISTEN_BACKLOG),
    [],
  );
});
