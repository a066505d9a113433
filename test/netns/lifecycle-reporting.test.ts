/**
 * What an agent reports of its pods' enrollment and of its own drain (issue 15, "what to expose"): readiness stays
 * false while a meshed pod found at the agent's start cannot be enrolled, and says so in its log, metrics and
 * /config_dump; a SIGTERM drain is visible on /metrics while it runs and its outcome is counted.
 */
import { execFile } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test, { type ExecutionContext } from "ava";
import type { ConfigDump } from "../../agent/admin/facts.js";
import type { RunningAgent } from "../../agent/node/run-agent.js";
import type { SimCluster } from "../../agent/sim/index.js";
import { capturingLogger } from "../support/log-lines.js";
import { within } from "../support/within.js";
import { localAgentArgs } from "./support/agent-args.js";
import { meshFor } from "./support/agents.js";
import { clusterFor } from "./support/cluster.js";
import { sleeperIn, stop } from "./support/netns-procs.js";
import { closeServer, dialFrom, serveIn } from "./support/sockets.js";

const meshed = { "ambit.dev/mesh": "enabled" };
/** One node with two meshed pods: a calls c through the mesh (same node: both ends are this agent's). */
const A_AND_C = {
  nodes: [
    {
      name: "n1",
      pods: [
        { name: "a", labels: meshed },
        { name: "c", labels: meshed },
      ],
    },
  ],
};

async function ready(agent: RunningAgent): Promise<{ status: number; reasons: string[] }> {
  const res = await fetch(`http://${agent.endpoints.ready}/healthz/ready`);
  return { status: res.status, reasons: ((await res.json()) as { reasons: string[] }).reasons };
}

async function configDump(agent: RunningAgent): Promise<ConfigDump> {
  return (await (await fetch(`http://${agent.endpoints.admin}/config_dump`)).json()) as ConfigDump;
}

async function scrape(agent: RunningAgent): Promise<string> {
  return (await fetch(`http://${agent.endpoints.metrics}/metrics`)).text();
}

/** Polls `check` every 50 ms until it holds; fails after `ms`. */
async function until(what: string, ms: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("a meshed pod already running at the agent's start that cannot be enrolled keeps it unready, logged and counted, until it is", async (t) => {
  t.timeout(30_000);
  // No sandbox processes: a /proc scan finds a pod's namespace only once this test puts a process in it, as for a
  // pod whose sandbox has not come back yet after a node reboot.
  const cluster = await clusterFor(t, {
    nodes: [
      {
        name: "n1",
        pods: [
          { name: "a", labels: meshed, discover: true },
          { name: "b", labels: meshed, discover: true },
        ],
      },
    ],
    sandboxes: false,
  });
  const sleepers = [await sleeperIn(cluster, cluster.pod("b").netnsName)];
  t.teardown(() => Promise.all(sleepers.map(stop)));
  const { logger, lines } = capturingLogger("info");
  const started = Date.now();
  const mesh = await meshFor(t, cluster, { logger });
  const agent = mesh.agents[0];
  if (!agent) throw new Error("no agent");

  t.deepEqual(await ready(agent), {
    status: 503,
    reasons: ["pod default/a: not enrolled: netns_not_found (retrying)"],
  });
  const metrics = await scrape(agent);
  t.regex(metrics, /^ambit_pods_not_enrolled\{reason="netns_not_found"\} 1$/m);
  t.regex(metrics, /^ambit_enrollment_failures_total\{reason="netns_not_found"\} [1-9]/m);
  t.regex(metrics, /^ambit_pods_enrolled 1$/m);
  const dump = await configDump(agent);
  t.deepEqual(dump.notEnrolled, [{ pod: "default/a", reason: "netns_not_found" }]);
  const b = dump.enrolled.find((e) => e.pod === "default/b");
  t.is(b?.source, "api", "b was found from its record, by a /proc scan");
  const at = Date.parse(b?.enrolledAt ?? "");
  t.true(at >= started && at <= Date.now(), `b enrolled during the agent's start: ${b?.enrolledAt}`);
  t.true(
    lines.some(
      (l) =>
        l.pod === "default/a" &&
        l.reason === "netns_not_found" &&
        /no network namespace with a process in it holds .*not enrolled, retried/.test(String(l.msg)),
    ),
    "which pod, why, and what next are logged",
  );

  // Its sandbox comes back: the next retry (every 5 s) finds and enrolls it.
  sleepers.push(await sleeperIn(cluster, cluster.pod("a").netnsName));
  await until("ready once a is enrolled", 8000, async () => (await ready(agent)).status === 200);
  t.deepEqual(await ready(agent), { status: 200, reasons: [] });
  t.notRegex(await scrape(agent), /^ambit_pods_not_enrolled\{/m);
  const after = await configDump(agent);
  t.deepEqual(after.notEnrolled, []);
  t.like(
    after.enrolled.find((e) => e.pod === "default/a"),
    { source: "api" },
  );
});

/** Serves back what it reads, in c's namespace. */
function echoIn(t: ExecutionContext, cluster: SimCluster): void {
  const c = cluster.pod("c");
  const app = serveIn(c.netnsPath, c.ipv4, 8080, (s) => {
    s.on("error", () => {});
    s.on("data", (d: Buffer) => s.write(d));
    s.on("end", () => s.end());
  });
  t.teardown(() => closeServer(app));
}

/** A connection from a to c through the mesh, once it echoed. */
async function connectThrough(t: ExecutionContext, cluster: SimCluster): Promise<Socket> {
  const client = await dialFrom(cluster.pod("a").netnsPath, cluster.pod("c").ipv4, 8080);
  // A drain that ends with the connection open resets it.
  client.on("error", () => {});
  t.teardown(() => client.destroy());
  client.write("ping");
  await within(new Promise((resolve) => client.once("data", resolve)), 5000, "the held connection's echo");
  return client;
}

/**
 * One agent serving a connection from a to c held open through the mesh (both pods on its node), so that a drain
 * waits for it.
 */
async function heldConnection(t: ExecutionContext) {
  const cluster = await clusterFor(t, A_AND_C);
  echoIn(t, cluster);
  const mesh = await meshFor(t, cluster);
  const agent = mesh.agents[0];
  if (!agent) throw new Error("no agent");
  return { agent, client: await connectThrough(t, cluster) };
}

/** Ends the client's side and resolves once the server's end came back. */
function endConnection(client: Socket): Promise<void> {
  return new Promise((resolve) => {
    client.on("end", () => resolve());
    client.on("close", () => resolve());
    client.resume();
    client.end();
  });
}

test("a drain shows on /metrics while it runs, and its outcome once the last connection ended (scraped)", async (t) => {
  t.timeout(30_000);
  const { agent, client } = await heldConnection(t);
  t.notRegex(await scrape(agent), /^ambit_draining 1$/m);
  const draining = agent.drain(10_000, 2000);
  await until("ambit_draining", 3000, async () => /^ambit_draining 1$/m.test(await scrape(agent)));
  t.notRegex(await scrape(agent), /^ambit_drains_total\{/m, "no outcome while the connection is open");
  await within(endConnection(client), 5000, "the connection's end");
  // Scraped over HTTP, as Prometheus would, in the window the metrics server stays up after the outcome.
  await until("the outcome on /metrics", 5000, async () =>
    /^ambit_drains_total\{outcome="drained"\} 1$/m.test(await scrape(agent)),
  );
  t.like(await within(draining, 5000, "the drain"), { outcome: "drained", left: 0 });
});

test("a drain whose period ends with a connection open counts period_over (scraped)", async (t) => {
  t.timeout(30_000);
  const { agent } = await heldConnection(t);
  const started = performance.now();
  const draining = agent.drain(300, 2000);
  await until("the outcome on /metrics", 5000, async () =>
    /^ambit_drains_total\{outcome="period_over"\} 1$/m.test(await scrape(agent)),
  );
  const drained = await within(draining, 15_000, "the drain");
  t.is(drained.outcome, "period_over");
  t.true(drained.left > 0, `connections left: ${drained.left}`);
  // What is left is reset when the period ends: the workers stop at once, the sessions of the pods they had
  // already let go of included (those once waited out the TLS close timeout, 10 s, and so did the agent's exit).
  const seconds = (performance.now() - started) / 1000;
  t.true(seconds < 0.3 + 2 + 3, `drain, report window and stop took ${seconds.toFixed(2)} s`);
});

test("a drain cut short resets what is left at once, also streams whose session a live peer agent keeps open", async (t) => {
  t.timeout(40_000);
  const cluster = await clusterFor(t, {
    nodes: [
      { name: "n1", pods: [{ name: "a", labels: meshed }] },
      { name: "n2", pods: [{ name: "c", labels: meshed }] },
    ],
  });
  echoIn(t, cluster);
  const mesh = await meshFor(t, cluster);
  const n2 = mesh.agents[1];
  if (!n2) throw new Error("no agent on n2");
  const client = await connectThrough(t, cluster);
  const reset = new Promise((resolve) => client.once("close", resolve));
  const started = performance.now();
  const drained = await within(n2.drain(300, 0), 15_000, "the drain");
  const seconds = (performance.now() - started) / 1000;
  t.is(drained.outcome, "period_over");
  // n1's agent keeps its session to n2 open: only n2 destroying the inbound session it had stopped serving ends the
  // stream. Before, a stopping worker forgot the HBONE servers of pods it had removed, and their sessions held the
  // worker (and the agent's exit) until the TLS close timeout, 10 s later.
  t.true(seconds < 3, `drain and stop took ${seconds.toFixed(2)} s`);
  await within(reset, 3000, "the held connection's reset");
});

test("stopping during a drain counts it interrupted (read from the registry), once", async (t) => {
  t.timeout(30_000);
  const { agent } = await heldConnection(t);
  const draining = agent.drain(10_000, 0);
  await until("ambit_draining", 3000, async () => /^ambit_draining 1$/m.test(await scrape(agent)));
  const stopping = agent.stop();
  // The servers close as stop() goes on: the registry is read at once, before anything else runs.
  const counted = await agent.metrics.registry.getSingleMetricAsString("ambit_drains_total");
  t.regex(counted, /^ambit_drains_total\{outcome="interrupted"\} 1$/m);
  t.notRegex(counted, /outcome="(drained|period_over)"/);
  await within(stopping, 5000, "the stop");
  t.is((await within(draining, 5000, "the drain")).outcome, "interrupted");
});

test("`ambit agent` on SIGTERM: ambit_draining while it drains, the outcome on /metrics for a while after, then exit 0", async (t) => {
  t.timeout(40_000);
  const cluster = await clusterFor(t, A_AND_C);
  echoIn(t, cluster);
  const dir = mkdtempSync(join(tmpdir(), "ambit-drain-"));
  const manifests = join(dir, "cluster.json");
  await cluster.writeManifests(manifests);
  const args = localAgentArgs("n1", manifests, join(dir, "ca"));
  args[args.indexOf("--metrics") + 1] = "127.0.0.1:15990";
  // In the node's namespace, as in agent-upgrade.test.ts: its host rules go there, and its ports are its own.
  const agent = cluster.spawnIn(
    cluster.node("n1").netnsName,
    process.execPath,
    ["dist/agent/cli.js", ...args, "--drain-seconds", "10"],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  t.teardown(() => {
    agent.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  const scrapeNode = async () => {
    const curl = ["netns", "exec", cluster.node("n1").netnsName, "curl", "-sf", "-m", "2", "127.0.0.1:15990/metrics"];
    return (await promisify(execFile)("ip", curl, { encoding: "utf8" })).stdout;
  };
  // Both pods enrolled (before that, a reaches c in plaintext: no rules yet).
  await until("the agent started", 15_000, () =>
    scrapeNode().then(
      (text) => /^ambit_pods_enrolled 2$/m.test(text),
      () => false,
    ),
  );
  const client = await connectThrough(t, cluster);
  const exited = once(agent, "exit");
  agent.kill("SIGTERM");
  await until("ambit_draining on /metrics", 5000, async () => /^ambit_draining 1$/m.test(await scrapeNode()));
  t.notRegex(await scrapeNode(), /^ambit_drains_total\{/m, "no outcome while the connection is open");
  await within(endConnection(client), 5000, "the connection's end");
  await until("the outcome on /metrics", 5000, async () =>
    /^ambit_drains_total\{outcome="drained"\} 1$/m.test(await scrapeNode()).valueOf(),
  );
  const seen = performance.now();
  const [code] = (await within(exited, 10_000, "the agent's exit")) as [number | null];
  t.is(code, 0);
  t.log(`exited ${((performance.now() - seen) / 1000).toFixed(2)} s after the outcome was first scraped`);
});
