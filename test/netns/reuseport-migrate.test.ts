/**
 * What lets an agent that is replaced close its in-pod listeners without refusing anyone (agent/redirect/enroller.ts):
 * with net.ipv4.tcp_migrate_req=1 in the namespace, the connections queued on a SO_REUSEPORT listener that closes
 * are handed to another member of its group; with 0 they are reset. Both are shown in a fresh namespace with the
 * bindings the enroller uses, and the enroller is checked to set it in the pod's namespace (the setting is per
 * namespace, not per listener).
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import net from "node:net";
import test, { type ExecutionContext } from "ava";
import { Redirector } from "../../agent/redirect/enroller.js";
import {
  closeFdQuietly,
  connectInNetns,
  LISTEN_BACKLOG,
  openListenerFdInNetns,
} from "../../native-bindings/sockets.js";
import { clusterFor, enrollTarget } from "./support/cluster.js";
import { serveWithNode } from "./support/node-listener.js";

const QUEUED = 100;
const PORT = 15006;
const ADDRESS = "127.0.0.1";

/** A new, empty network namespace with loopback up, deleted when the test ends. */
function freshNetns(t: ExecutionContext): { name: string; path: string } {
  const name = `ambit-migrate-${randomBytes(3).toString("hex")}`;
  execFileSync("ip", ["netns", "add", name]);
  t.teardown(() => execFileSync("ip", ["netns", "del", name]));
  execFileSync("ip", ["-n", name, "link", "set", "lo", "up"]);
  return { name, path: `/run/netns/${name}` };
}

function migrateReq(netnsName: string): number {
  return Number(
    execFileSync("ip", ["netns", "exec", netnsName, "sysctl", "-n", "net.ipv4.tcp_migrate_req"], { encoding: "utf8" }),
  );
}

/** Connections waiting in the accept queue of the listener on `port` (ss prints them in a listener's Recv-Q). */
function acceptQueue(netnsName: string, port: number): number[] {
  const out = execFileSync("ip", ["netns", "exec", netnsName, "ss", "-Hltn", `sport = :${port}`], { encoding: "utf8" });
  return out
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((line) => Number(line.trim().split(/\s+/)[1]));
}

/**
 * QUEUED connections fill the accept queue of listener "old", which never accepts; then "new" joins its group and
 * old closes. Counts the clients that then heard from new, and those reset.
 */
async function queuedThenClosed(t: ExecutionContext, migrate: 0 | 1) {
  const ns = freshNetns(t);
  execFileSync("ip", ["netns", "exec", ns.name, "sysctl", "-qw", `net.ipv4.tcp_migrate_req=${migrate}`]);
  const old = openListenerFdInNetns(ns.path, { address: ADDRESS, port: PORT, reusePort: true });
  let oldOpen = true;
  t.teardown(() => {
    if (oldOpen) closeFdQuietly(old);
  });
  const clients = await Promise.all(
    Array.from({ length: QUEUED }, () => connectInNetns(ns.path, { address: ADDRESS, port: PORT, mark: 0 })),
  );
  t.teardown(() => {
    for (const c of clients) c.destroy();
  });
  const outcomes = clients.map(
    (c) =>
      new Promise<string>((resolve) => {
        let got = "";
        c.on("data", (d: Buffer) => {
          got += d.toString();
        });
        c.on("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? String(err)));
        c.on("end", () => resolve(got || "closed without data"));
        c.setTimeout(5000, () => resolve("no answer in 5 s"));
      }),
  );
  t.deepEqual(acceptQueue(ns.name, PORT), [QUEUED], "every connection waits in the old listener's queue");

  let accepted = 0;
  const server = net.createServer((s) => {
    accepted++;
    s.on("error", () => {});
    s.end("from new");
  });
  t.teardown(() => server.close());
  server.listen(
    { fd: openListenerFdInNetns(ns.path, { address: ADDRESS, port: PORT, reusePort: true }) },
    LISTEN_BACKLOG,
  );
  t.is(acceptQueue(ns.name, PORT).length, 2, "both listeners in the group");

  closeFdQuietly(old);
  oldOpen = false;
  const results = await Promise.all(outcomes);
  const count = (what: string) => results.filter((r) => r === what).length;
  return { accepted, answered: count("from new"), reset: count("ECONNRESET"), results };
}

test("tcp_migrate_req=1: the connections queued on a closing SO_REUSEPORT listener are accepted by the other", async (t) => {
  const r = await queuedThenClosed(t, 1);
  t.log(`migrate 1: ${r.answered} of ${QUEUED} queued connections answered by the new listener, ${r.reset} reset`);
  t.is(r.accepted, QUEUED);
  t.is(r.answered, QUEUED, `outcomes: ${[...new Set(r.results)]}`);
});

test("tcp_migrate_req=0 (the kernel's default): the same connections are reset", async (t) => {
  const r = await queuedThenClosed(t, 0);
  t.log(`migrate 0: ${r.reset} of ${QUEUED} queued connections reset, ${r.answered} answered by the new listener`);
  t.is(r.accepted, 0);
  t.is(r.reset, QUEUED, `outcomes: ${[...new Set(r.results)]}`);
});

test("the enroller sets tcp_migrate_req=1 in the pod's namespace it enrolls, and only there", async (t) => {
  const cluster = await clusterFor(t, {
    nodes: [{ name: "n1", pods: [{ name: "a", labels: { "ambit.dev/mesh": "enabled" } }, { name: "b" }] }],
  });
  const [a, b] = [cluster.pod("a"), cluster.pod("b")];
  t.is(migrateReq(a.netnsName), 0, "a new namespace starts at 0");
  const redirector = new Redirector();
  redirector.enroll(enrollTarget(t, cluster, "a"), (_kind, _family, _target, fd) =>
    serveWithNode(
      net.createServer((s) => s.destroy()),
      fd,
    ),
  );
  t.teardown(() => redirector.closeListenersOnly());
  t.is(migrateReq(a.netnsName), 1);
  t.is(migrateReq(b.netnsName), 0, "the pod not enrolled, and so the node's other namespaces, keep theirs");
});
