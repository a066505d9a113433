/**
 * Finding a pod's network namespace with no path to go by, as the agent must with the API server as its source:
 * a /proc scan over real namespaces with real processes in them. Other test runs may have simulated clusters (and
 * processes in them) at the same time: assertions only ever concern this file's own clusters' addresses, and other
 * namespaces are only read.
 */
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import type { Socket } from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import test, { type ExecutionContext } from "ava";
import { NetnsReleasedError } from "../../agent/netns/errors.js";
import { NetnsRegistry, type NetnsResolution, type PodNetnsRequest } from "../../agent/netns/netns-registry.js";
import { inPodNetnsFd } from "../../agent/pod-netns.js";
import type { SimCluster, SimPod } from "../../agent/sim/index.js";
import { interfaceAddresses } from "../../native-bindings/ifaddrs.js";
import { netnsId, openNetns } from "../../native-bindings/netns.js";
import { closeFdQuietly, connectInNetnsFd } from "../../native-bindings/sockets.js";
import { capturingLogger } from "../support/log-lines.js";
import { clusterFor } from "./support/cluster.js";
import { fdsOn, inodeOf, sleeperIn, stop } from "./support/netns-procs.js";
import { answerIn, closeServer } from "./support/sockets.js";

function simCluster(t: ExecutionContext, pods: string[], ipv6 = false): Promise<SimCluster> {
  // No sandbox processes: each test decides which namespaces have a process in them.
  return clusterFor(t, {
    nodes: [{ name: "n1", pods: pods.map((name) => ({ name })) }],
    ipv6,
    sandboxes: false,
  });
}

/** A pod as the API server describes it: no path, a UID. */
function request(
  pod: SimPod,
  ips = [pod.ipv4, ...(pod.ipv6 ? [pod.ipv6] : [])],
  uid: string = randomUUID(),
): PodNetnsRequest {
  return { key: `${pod.namespace}/${pod.name}`, uid, ips };
}

function registryFor(t: ExecutionContext, options: { procRoot?: string; cacheTtlMs?: number } = {}) {
  const { logger, lines } = capturingLogger();
  const registry = new NetnsRegistry({ ...options, logger, logIntervalMs: 0 });
  t.teardown(() => registry.releaseAll());
  return { registry, lines, logger };
}

function held(result: NetnsResolution) {
  if (!result.ok) throw new Error(`expected a namespace, got ${result.reason}: ${result.error.message}`);
  return result;
}

function failed(result: NetnsResolution) {
  if (result.ok) throw new Error(`expected a failure, got ${result.netns.description}`);
  return result;
}

async function readAll(s: Socket): Promise<string> {
  let text = "";
  s.on("data", (d: Buffer) => {
    text += d;
  });
  await new Promise((resolve) => s.once("end", resolve));
  s.end();
  return text;
}

test("found by IPv4 and by IPv6; the held descriptor enters the pod's own namespace, for reads and connections", async (t) => {
  const c = await simCluster(t, ["a", "b"], true);
  const [a, b] = [c.pod("a"), c.pod("b")];
  await sleeperIn(c, a.netnsName);
  await sleeperIn(c, b.netnsName);
  const { registry, lines, logger } = registryFor(t);

  const byV4 = held(registry.resolve(request(a, [a.ipv4])));
  t.is(byV4.netns.inode, inodeOf(a.netnsPath));
  t.false(byV4.replaced);
  t.is(netnsId(byV4.netns.fd).inode, inodeOf(a.netnsPath), "the descriptor is that namespace");
  const inside = inPodNetnsFd(byV4.netns, () => interfaceAddresses(), logger);
  t.true(inside.some((x) => x.address === a.ipv4 && x.interface === "eth0" && x.family === 4));
  t.true(inside.some((x) => x.address === a.ipv6 && x.family === 6));
  t.true(inside.some((x) => x.family === 6 && x.address.startsWith("fe80:") && (x.scopeId ?? 0) > 0));
  t.false(
    inside.some((x) => x.address === b.ipv4),
    "not b's addresses",
  );
  t.truthy(lines.find((l) => l.pod === "default/a" && String(l.msg).includes("found and held open")));

  const byV6 = held(registry.resolve(request(b, [(b.ipv6 as string).toUpperCase()])));
  t.is(byV6.netns.inode, inodeOf(b.netnsPath));
  const mapped = held(registry.resolve({ key: "default/a2", uid: randomUUID(), ips: [`::ffff:${a.ipv4}`] }));
  t.is(mapped.netns.inode, inodeOf(a.netnsPath), "an IPv4-mapped form is the same IPv4 address");

  // A marked connection opened through the held descriptor leaves from a's address.
  const app = answerIn(b.netnsPath, b.ipv4, 8080, (s) => `${s.remoteAddress}`);
  t.teardown(() => closeServer(app));
  const s = await connectInNetnsFd(byV4.netns.fd, { address: b.ipv4, port: 8080, mark: 0x539 });
  t.is(await readAll(s), a.ipv4);
});

test("not found while no process is in the namespace (logged, counted), found once one is", async (t) => {
  const c = await simCluster(t, ["a"]);
  const a = c.pod("a");
  const { registry, lines } = registryFor(t);
  const pod = request(a);

  const missing = failed(registry.resolve(pod));
  t.is(missing.reason, "netns_not_found");
  t.is(missing.error.code, "netns_not_found");
  t.is(registry.notEnrolled().netns_not_found, 1);
  t.is(registry.get(pod.key), undefined);
  const line = lines.find((l) => l.pod === pod.key && l.reason === "netns_not_found");
  t.is(line?.level, 40, "a warning");
  t.regex(
    String(line?.msg),
    new RegExp(`holds ${a.ipv4.replaceAll(".", "\\.")}.*not enrolled, retried on the next resolve`),
  );

  await sleeperIn(c, a.netnsName);
  const found = held(registry.resolve(pod));
  t.is(found.netns.inode, inodeOf(a.netnsPath));
  t.is(registry.notEnrolled().netns_not_found, 0, "no longer counted");
  t.is(registry.get(pod.key), found.netns);
});

test("the agent's own namespace is never a pod's: a pod with the node's address (hostNetwork) is not found", async (t) => {
  const own = Object.values(networkInterfaces())
    .flat()
    .find((a) => a && !a.internal && a.family === "IPv4");
  if (!own) return t.pass("no non-loopback IPv4 address here");
  const { registry } = registryFor(t);
  t.is(
    failed(registry.resolve({ key: "default/host", uid: randomUUID(), ips: [own.address] })).reason,
    "netns_not_found",
  );
});

test("two namespaces holding the pod's IP are ambiguous until only one does", async (t) => {
  const c = await simCluster(t, ["a", "b"]);
  const [a, b] = [c.pod("a"), c.pod("b")];
  await sleeperIn(c, a.netnsName);
  await sleeperIn(c, b.netnsName);
  await c.exec(b.netnsName, "ip", ["addr", "add", `${a.ipv4}/32`, "dev", "lo"]);
  const { registry, lines } = registryFor(t);
  const pod = request(a);
  const both = failed(registry.resolve(pod));
  t.is(both.reason, "netns_ambiguous");
  t.is(registry.notEnrolled().netns_ambiguous, 1);
  const line = lines.find((l) => l.pod === pod.key && l.reason === "netns_ambiguous") as { claimants?: unknown };
  t.deepEqual(
    (line.claimants as Array<{ netns: number }>).map((x) => x.netns).sort(),
    [inodeOf(a.netnsPath), inodeOf(b.netnsPath)].sort(),
    "the log line names both namespaces",
  );

  // Removed within the cache's lifetime: the cached addresses said "ambiguous", the fresh scan says otherwise.
  await c.exec(b.netnsName, "ip", ["addr", "del", `${a.ipv4}/32`, "dev", "lo"]);
  t.is(held(registry.resolve(pod)).netns.inode, inodeOf(a.netnsPath));
  t.is(registry.notEnrolled().netns_ambiguous, 0);
});

test("a sandbox restart (the pod's IP now in another namespace) holds the new namespace and closes the old descriptor", async (t) => {
  const c = await simCluster(t, ["a", "b"]);
  const [a, b] = [c.pod("a"), c.pod("b")];
  const first = await sleeperIn(c, a.netnsName);
  const { registry, lines } = registryFor(t);
  const pod = request(a);
  const [oldInode, newInode] = [inodeOf(a.netnsPath), inodeOf(b.netnsPath)];

  const before = held(registry.resolve(pod));
  t.is(before.netns.inode, oldInode);
  t.is(fdsOn(oldInode), 1, "one descriptor held on the old namespace");
  t.is(held(registry.resolve(pod)).netns, before.netns, "still standing: the same handle, no new descriptor");
  t.is(fdsOn(oldInode), 1);

  // The sandbox restarts: its process goes, the IP moves to a new namespace with a new process.
  await stop(first);
  await c.exec(a.netnsName, "ip", ["addr", "del", `${a.ipv4}/24`, "dev", "eth0"]);
  await c.exec(b.netnsName, "ip", ["addr", "add", `${a.ipv4}/32`, "dev", "lo"]);
  await sleeperIn(c, b.netnsName);

  const after = held(registry.resolve(pod));
  t.true(after.replaced);
  t.is(after.netns.inode, newInode);
  t.is(fdsOn(oldInode), 0, "the old descriptor is closed");
  t.is(fdsOn(newInode), 1, "one descriptor on the new namespace");
  t.true(before.netns.released);
  t.throws(() => before.netns.fd, { instanceOf: NetnsReleasedError });
  t.truthy(lines.find((l) => l.pod === pod.key && l.previous === oldInode && l.netns === newInode));

  // The pod recreated under the same name (new UID) in the same place is a new pod: a new handle.
  const recreated = held(registry.resolve({ ...pod, uid: randomUUID() }));
  t.true(recreated.replaced);
  t.true(after.netns.released);
  t.is(fdsOn(newInode), 1);
});

test("a held namespace that no longer holds the pod is closed when the pod cannot be found again", async (t) => {
  const c = await simCluster(t, ["a"]);
  const a = c.pod("a");
  const sleeper = await sleeperIn(c, a.netnsName);
  const { registry } = registryFor(t);
  const pod = request(a);
  const before = held(registry.resolve(pod));

  await stop(sleeper);
  const gone = failed(registry.resolve(pod));
  t.is(gone.reason, "netns_not_found");
  t.true(before.netns.released);
  t.is(fdsOn(inodeOf(a.netnsPath)), 0);
  t.is(registry.get(pod.key), undefined);
});

// Serial (alone in the process): it counts every descriptor the process has.
test.serial("release closes the descriptor exactly once", async (t) => {
  const c = await simCluster(t, ["a", "b"]);
  const [a, b] = [c.pod("a"), c.pod("b")];
  await sleeperIn(c, a.netnsName);
  const { registry } = registryFor(t);
  const pod = request(a);
  const open = () => readdirSync("/proc/self/fd").length;
  // Once first, for what stays open for good: the agent's own namespace, opened on the first entry.
  held(registry.resolve(pod));
  registry.release(pod.key);
  const before = open();
  const { netns } = held(registry.resolve(pod));
  t.is(open(), before + 1, "one descriptor held, none left over from the scan");

  t.true(registry.release(pod.key));
  t.is(open(), before);
  t.is(fdsOn(inodeOf(a.netnsPath)), 0);
  t.throws(() => netns.fd, { instanceOf: NetnsReleasedError });
  // The next file opened may get the released number; a second release must leave it alone.
  const other = openNetns(b.netnsPath);
  t.teardown(() => closeFdQuietly(other));
  t.false(registry.release(pod.key));
  t.is(open(), before + 1);
  t.is(netnsId(other).inode, inodeOf(b.netnsPath), "the descriptor opened since is intact");
  t.is(registry.size, 0);
});

test("a record that names a path is opened there, with no scan; the host's own namespace is refused", async (t) => {
  const c = await simCluster(t, ["a"]);
  const a = c.pod("a");
  const { registry } = registryFor(t);
  const pod = { ...request(a), netns: a.netnsPath };

  const byPath = held(registry.resolve(pod));
  t.is(byPath.netns.inode, inodeOf(a.netnsPath), "found without any process inside");
  t.is(byPath.netns.source, "path");
  t.is(held(registry.resolve(pod)).netns, byPath.netns);
  t.is(fdsOn(inodeOf(a.netnsPath)), 1);

  t.is(failed(registry.resolve({ ...pod, key: "x/own", netns: "/proc/self/ns/net" })).reason, "netns_host");
  t.is(
    failed(registry.resolve({ ...pod, key: "x/missing", netns: "/var/run/netns/ambit-none" })).reason,
    "netns_not_found",
  );
  t.is(failed(registry.resolve({ ...pod, key: "x/file", netns: "/etc/passwd" })).reason, "netns_unreadable");
  t.is(
    failed(registry.resolve({ ...pod, key: "x/noip", netns: undefined, ips: ["127.0.0.1", "fe80::1"] })).reason,
    "pod_ip_missing",
  );
  t.deepEqual(registry.notEnrolled(), {
    pod_ip_missing: 1,
    netns_not_found: 1,
    netns_ambiguous: 0,
    netns_other_pod: 0,
    netns_unreadable: 1,
    netns_host: 1,
  });
  t.is(registry.size, 1);
});

/**
 * A /proc of our own making, for what real processes cannot be made to do on cue. Each entry's ns/net link names
 * `net:[inode]`; opening it follows a second link of that name beside it, to `opensAs` (a real /proc/PID/ns/net),
 * or to nothing when `opensAs` is absent: the process exited between the listing and the open.
 */
function fakeProc(
  t: ExecutionContext,
  entries: Array<{ pid: number; inode: number; opensAs?: string; cgroup?: string }>,
) {
  const root = mkdtempSync(join(tmpdir(), "ambit-fake-proc-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const host = Number(/\d+/.exec(readlinkSync("/proc/self/ns/net"))?.[0]);
  for (const e of [{ pid: 1, inode: host }, ...entries]) {
    const ns = join(root, String(e.pid), "ns");
    mkdirSync(ns, { recursive: true });
    symlinkSync(`net:[${e.inode}]`, join(ns, "net"));
    if ("opensAs" in e && e.opensAs) symlinkSync(e.opensAs, join(ns, `net:[${e.inode}]`));
    if ("cgroup" in e && e.cgroup) writeFileSync(join(root, String(e.pid), "cgroup"), e.cgroup);
  }
  mkdirSync(join(root, "self"));
  return root;
}

test('a process that exits between scan steps is skipped, a PID reused by another namespace is not trusted, an unreadable namespace makes "not found" unsure', async (t) => {
  const c = await simCluster(t, ["a", "b"]);
  const [a, b] = [c.pod("a"), c.pod("b")];
  const [inA, inB] = [await sleeperIn(c, a.netnsName), await sleeperIn(c, b.netnsName)];
  const [nsA, nsB] = [inodeOf(a.netnsPath), inodeOf(b.netnsPath)];
  const procRoot = fakeProc(t, [
    { pid: 100, inode: nsA },
    { pid: 101, inode: nsA, opensAs: `/proc/${inB.pid}/ns/net` },
    { pid: 102, inode: nsA, opensAs: `/proc/${inA.pid}/ns/net` },
    { pid: 200, inode: nsB },
  ]);
  const { registry, lines } = registryFor(t, { procRoot });

  const found = held(registry.resolve(request(a)));
  t.is(found.netns.inode, nsA, "through the one entry that still is in a's namespace");
  t.is(found.netns.openedAt, `/proc/102/ns/net`);
  t.is(fdsOn(nsB), 0, "the descriptor that turned out to be b's was closed");
  const line = lines.find((l) => String(l.msg).includes("found and held open")) as { scan: { gone: number } };
  t.true(line.scan.gone >= 3, "entries 100, 101 and 200 counted as gone");

  const gone = [
    { pid: 100, inode: nsA },
    { pid: 101, inode: nsA, opensAs: `/proc/${inB.pid}/ns/net` },
  ];
  const onlyGone = fakeProc(t, gone);
  const second = registryFor(t, { procRoot: onlyGone });
  t.is(failed(second.registry.resolve(request(a))).reason, "netns_not_found", "a failure, not an exception");
  t.is(fdsOn(nsB), 0);

  // A namespace that cannot be entered (here: not a network namespace) might have been the pod's.
  const mnt = inodeOf("/proc/self/ns/mnt");
  const unenterable = fakeProc(t, [...gone, { pid: 400, inode: mnt, opensAs: "/proc/self/ns/mnt" }]);
  const third = registryFor(t, { procRoot: unenterable });
  const unsure = failed(third.registry.resolve(request(a)));
  t.is(unsure.reason, "netns_unreadable");
  t.regex(unsure.error.message, /1 could not be read/);
});

test("a process churn in the namespace never breaks a scan", async (t) => {
  const c = await simCluster(t, ["a"]);
  const a = c.pod("a");
  // One shell stays in the namespace; the processes it starts exit all the time, many while being inspected.
  const churn = c.spawnIn(a.netnsName, "sh", ["-c", "while :; do /bin/true; done"]);
  t.teardown(() => stop(churn));
  await sleeperIn(c, a.netnsName);
  const { registry } = registryFor(t, { cacheTtlMs: 0 });
  const pod = request(a);
  for (let i = 0; i < 40; i++) {
    const r = registry.resolve(pod);
    t.true(r.ok && r.netns.inode === inodeOf(a.netnsPath));
    registry.release(pod.key);
  }
});

test("with the pod's UID, a namespace whose processes belong to another pod (by cgroup) is set aside", async (t) => {
  const c = await simCluster(t, ["a", "b"]);
  const [a, b] = [c.pod("a"), c.pod("b")];
  const [inA, inB] = [await sleeperIn(c, a.netnsName), await sleeperIn(c, b.netnsName)];
  const [nsA, nsB] = [inodeOf(a.netnsPath), inodeOf(b.netnsPath)];
  // b copies a's address: by IPs alone, two namespaces claim it.
  await c.exec(b.netnsName, "ip", ["addr", "add", `${a.ipv4}/32`, "dev", "lo"]);
  const [uidA, uidB] = [randomUUID(), randomUUID()];
  const procRoot = fakeProc(t, [
    { pid: 300, inode: nsA, opensAs: `/proc/${inA.pid}/ns/net`, cgroup: `0::/kubepods/besteffort/pod${uidA}/c0\n` },
    { pid: 301, inode: nsB, opensAs: `/proc/${inB.pid}/ns/net`, cgroup: `0::/kubepods/besteffort/pod${uidB}/c1\n` },
  ]);
  const { registry, lines } = registryFor(t, { procRoot });

  const found = held(registry.resolve(request(a, [a.ipv4], uidA)));
  t.is(found.netns.inode, nsA);
  t.truthy(
    lines.find((l) => String(l.msg).includes("belong to other pods")),
    "the copy is reported",
  );
  const stranger = failed(registry.resolve({ ...request(a, [a.ipv4]), key: "default/stranger" }));
  t.is(stranger.reason, "netns_other_pod");
  t.is(failed(registry.resolve({ ...request(a, [a.ipv4], "") })).reason, "netns_ambiguous", "no UID: IPs alone");
});
