import { execFileSync, spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import anyTest, { type TestFn } from "ava";
import { MESH_LABEL } from "../../agent/kube/mesh-selection.js";
import {
  cleanupStale,
  createSimCluster,
  SIM_POD_LABEL,
  type SimCluster,
  SimCommandError,
  SimCreateError,
  type SimPod,
  SimSpecError,
  SimUsageError,
} from "../../agent/sim/index.js";

// Needs root (network namespaces); skipped elsewhere so `ava` still runs for unprivileged developers.
const test = (process.getuid?.() === 0 ? anyTest : anyTest.skip) as TestFn;

const ECHO_PORT = 7007;
const SERVER = `const s=require("net").createServer(c=>c.pipe(c));s.listen({port:${ECHO_PORT},host:"::"},()=>console.log("ready"))`;
const CLIENT = `const [h,p,m]=process.argv.slice(1);const c=require("net").connect({host:h,port:+p},()=>c.end(m));let d="";
c.on("data",x=>d+=x);c.on("end",()=>process.stdout.write(d));c.on("error",e=>{console.error(e.message);process.exit(2)});
setTimeout(()=>{console.error("timeout");process.exit(3)},3000).unref()`;

function netnsWithPrefix(prefix: string): string[] {
  return readdirSync("/var/run/netns").filter((n) => n.startsWith(`${prefix}-`));
}

/** Starts an echo server inside `pod` and waits until it listens. */
async function startEcho(cluster: SimCluster, pod: SimPod): Promise<void> {
  const child = cluster.spawnIn(pod.netnsName, process.execPath, ["-e", SERVER]);
  await new Promise<void>((resolve, reject) => {
    let err = "";
    child.stderr?.on("data", (d) => {
      err += d;
    });
    child.stdout?.once("data", () => resolve());
    child.once("exit", (code) => reject(new Error(`echo server in ${pod.name} exited ${code}: ${err}`)));
  });
}

async function echo(cluster: SimCluster, from: SimPod, host: string): Promise<string> {
  const message = `hello ${host} from ${from.name}`;
  const { stdout } = await cluster.exec(from.netnsName, process.execPath, [
    "-e",
    CLIENT,
    host,
    String(ECHO_PORT),
    message,
  ]);
  return stdout === message ? "ok" : `unexpected echo: ${stdout}`;
}

test("2 nodes x 2 pods, dual stack: pods reach each other on the same node and across nodes", async (t) => {
  const started = Date.now();
  const cluster = await createSimCluster({
    ipv6: true,
    nodes: [
      {
        name: "node-a",
        pods: [
          { name: "a1", labels: { [MESH_LABEL]: "enabled" } },
          { name: "a2", namespace: "shop" },
        ],
      },
      {
        name: "node-b",
        pods: [
          { name: "b1", serviceAccount: "api" },
          { name: "b2", peerAuthentication: "STRICT" },
        ],
      },
    ],
  });
  const built = Date.now() - started;
  t.teardown(() => cluster.destroy());
  t.log(`built ${cluster.prefix} (2 nodes, 4 pods) in ${built} ms`);

  t.is(cluster.nodes.length, 2);
  t.is(cluster.pods.length, 4);
  for (const ns of cluster.netnsNames) t.true(existsSync(`/var/run/netns/${ns}`), ns);
  const [a1, a2, b1, b2] = [cluster.pod("a1"), cluster.pod("a2", "shop"), cluster.pod("b1"), cluster.pod("b2")];
  t.is(a1.netnsName, `${cluster.prefix}-n1-p1`);
  t.is(b2.netnsPath, `/var/run/netns/${cluster.prefix}-n2-p2`);
  t.is(cluster.node("node-b").gateway4, `10.${cluster.octet}.2.1`);

  // Interface names never appeared in (or were left in) the root namespace.
  const rootLinks = execFileSync("ip", ["-o", "link"], { encoding: "utf8" });
  t.false(/\b(veth1|up0)@/.test(rootLinks));

  await startEcho(cluster, a1);
  await startEcho(cluster, b1);
  const checks: Array<[SimPod, SimPod, "ipv4" | "ipv6"]> = [
    [a2, a1, "ipv4"], // same node
    [a2, a1, "ipv6"],
    [b2, a1, "ipv4"], // across nodes
    [b2, a1, "ipv6"],
    [a1, b1, "ipv4"],
    [a1, b1, "ipv6"],
    [b2, b1, "ipv4"],
  ];
  for (const [from, to, family] of checks) {
    const host = to[family];
    t.truthy(host);
    t.is(await echo(cluster, from, host as string), "ok", `${from.name} -> ${to.name} over ${family}`);
  }

  // The cluster as Kubernetes objects, and as a source reads them.
  const state = cluster.clusterState([{ name: "shop", labels: { [MESH_LABEL]: "enabled" } }]);
  t.like(state.pods.get("default/b1"), { namespace: "default", serviceAccount: "api", nodeName: "node-b" });
  t.deepEqual(state.pods.get("default/a1")?.ips, [a1.ipv4, a1.ipv6]);
  t.is(state.pods.get("default/a1")?.netns, a1.netnsPath);
  t.like(
    [...state.peerAuthentications.values()],
    [{ namespace: "default", mtls: "STRICT", selector: { [SIM_POD_LABEL]: "b2" } }],
  );
  t.deepEqual([...state.namespaces.keys()].sort(), ["default", "shop"]);
  t.is(state.namespaces.get("shop")?.labels[MESH_LABEL], "enabled");
  const dir = await mkdtemp(join(tmpdir(), "ambit-sim-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await cluster.writeManifests(join(dir, "cluster.json"));
  const written = JSON.parse(await readFile(join(dir, "cluster.json"), "utf8")) as { items: Array<{ kind: string }> };
  t.is(written.items.filter((o) => o.kind === "Pod").length, 4);

  await t.throwsAsync(() => cluster.exec("some-other-netns", "true"), { instanceOf: SimUsageError });
  t.throws(() => cluster.spawnIn("some-other-netns", "true"), { instanceOf: SimUsageError });

  const destroyStart = Date.now();
  await cluster.destroy();
  t.log(`destroyed in ${Date.now() - destroyStart} ms`);
  t.deepEqual(netnsWithPrefix(cluster.prefix), []);
  t.true(cluster.destroyed);
  await cluster.destroy(); // idempotent
  await t.throwsAsync(() => cluster.exec(a1.netnsName, "true"), { instanceOf: SimUsageError });
});

test("IPv4-only cluster on one node", async (t) => {
  const cluster = await createSimCluster({ nodes: [{ name: "solo", pods: [{ name: "x" }, { name: "y" }] }] });
  t.teardown(() => cluster.destroy());
  t.is(cluster.pod("x").ipv6, undefined);
  t.deepEqual(cluster.clusterState().pods.get("default/x")?.ips, [cluster.pod("x").ipv4]);
  await startEcho(cluster, cluster.pod("x"));
  t.is(await echo(cluster, cluster.pod("y"), cluster.pod("x").ipv4), "ok");
  await cluster.destroy();
  t.deepEqual(netnsWithPrefix(cluster.prefix), []);
});

test("an invalid spec is refused before anything is created", async (t) => {
  const prefix = "amtinv";
  await t.throwsAsync(
    () => createSimCluster({ prefix, nodes: [{ name: "n", pods: [{ name: "p" }, { name: "p" }] }] }),
    { instanceOf: SimSpecError, code: "SIM_INVALID_SPEC", message: /defined twice/ },
  );
  await t.throwsAsync(() => createSimCluster({ prefix, nodes: [{ name: "Bad_Name", pods: [] }] }), {
    instanceOf: SimSpecError,
  });
  await t.throwsAsync(() => createSimCluster({ prefix: "x-y", nodes: [{ name: "n", pods: [] }] }), {
    instanceOf: SimSpecError,
  });
  t.deepEqual(netnsWithPrefix(prefix), []);
});

test("a failure halfway removes everything made so far", async (t) => {
  const prefix = `amf${process.pid.toString(16).slice(-4)}`;
  const steps: string[] = [];
  const err = await t.throwsAsync(
    () =>
      createSimCluster({
        prefix,
        ipv6: true,
        nodes: [
          { name: "n1", pods: [{ name: "p1" }, { name: "p2" }] },
          { name: "n2", pods: [{ name: "p3" }] },
        ],
        onStep: (s) => {
          steps.push(s);
          if (s.startsWith("pod default/p2")) throw new Error("injected failure");
        },
      }),
    { instanceOf: SimCreateError, code: "SIM_CREATE_FAILED" },
  );
  t.is((err?.cause as Error | undefined)?.message, "injected failure");
  t.true(steps.length >= 4);
  t.deepEqual(netnsWithPrefix(prefix), []);
});

test("a failing command cleans up, reports the command and its stderr, and never deletes what it did not make", async (t) => {
  const prefix = `amc${process.pid.toString(16).slice(-4)}`;
  // A namespace this test made, in the way of the cluster's second node.
  const blocker = `${prefix}-n2`;
  execFileSync("ip", ["netns", "add", blocker]);
  t.teardown(() => {
    if (existsSync(`/var/run/netns/${blocker}`)) execFileSync("ip", ["netns", "del", blocker]);
  });
  const err = await t.throwsAsync(
    () =>
      createSimCluster({
        prefix,
        nodes: [
          { name: "n1", pods: [{ name: "p1" }] },
          { name: "n2", pods: [{ name: "p2" }] },
        ],
      }),
    { instanceOf: SimCreateError },
  );
  const cause = err?.cause;
  t.true(cause instanceof SimCommandError);
  t.is((cause as SimCommandError).commandLine, `ip netns add ${blocker}`);
  t.regex((cause as SimCommandError).stderr, /exists/i);
  t.regex(err?.message ?? "", new RegExp(`ip netns add ${blocker}`));
  t.deepEqual(netnsWithPrefix(prefix), [blocker]);
});

test("cleanupStale removes a cluster whose owner could not (and destroy still succeeds after)", async (t) => {
  const cluster = await createSimCluster({ nodes: [{ name: "n", pods: [{ name: "p" }] }] });
  t.teardown(() => cluster.destroy());
  cluster.spawnIn(cluster.pod("p").netnsName, "sleep", ["60"]);
  const removed = await cleanupStale(cluster.prefix);
  t.deepEqual(removed.sort(), [`${cluster.prefix}-fab`, `${cluster.prefix}-n1`, `${cluster.prefix}-n1-p1`]);
  t.deepEqual(netnsWithPrefix(cluster.prefix), []);
  await cluster.destroy();
  await t.throwsAsync(() => cleanupStale(""), { instanceOf: SimSpecError });
});

for (const how of ["exit", "SIGTERM"] as const) {
  test(`a process that ends by ${how} without destroy leaves no namespaces behind`, async (t) => {
    const prefix = `am${how === "exit" ? "x" : "s"}${process.pid.toString(16).slice(-4)}`;
    const lib = new URL("../../agent/sim/index.js", import.meta.url).href;
    const script = `import { createSimCluster } from ${JSON.stringify(lib)};
      await createSimCluster({ prefix: ${JSON.stringify(prefix)}, nodes: [{ name: "n", pods: [{ name: "p" }] }] });
      console.log("ready");
      ${how === "exit" ? "process.exit(3);" : "setInterval(() => {}, 1000);"}`;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
    t.teardown(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await cleanupStale(prefix);
    });
    let stderr = "";
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout.once("data", () => resolve());
      child.once("exit", () => (how === "exit" ? resolve() : reject(new Error(stderr))));
    });
    if (how === "SIGTERM") {
      t.is(netnsWithPrefix(prefix).length, 3);
      child.kill("SIGTERM");
    }
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve([child.exitCode, child.signalCode]);
      else child.once("exit", (c, s) => resolve([c, s]));
    });
    if (how === "exit") t.is(code, 3, stderr);
    else t.is(signal, "SIGTERM", stderr);
    t.deepEqual(netnsWithPrefix(prefix), []);
  });
}
