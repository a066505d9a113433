import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import type { ConfigDump } from "../../agent/admin/facts.js";
import { silentLogger } from "../../agent/log.js";
import { type RunningAgent, startAgent } from "../../agent/node/run-agent.js";
import { type SimCluster, writeFileAtomic } from "../../agent/sim/index.js";
import { chainedConfig, runPlugin } from "../support/cni-plugin.js";
import { capturingLogger } from "../support/log-lines.js";
import { meshFor } from "./support/agents.js";
import { startCapture } from "./support/capture.js";
import { clusterFor } from "./support/cluster.js";
import { ruleCount } from "./support/nft.js";
import { answerIn, closeServer, request } from "./support/sockets.js";

const meshed = { "ambit.dev/mesh": "enabled" };

type KubeObject = Record<string, unknown> & { kind?: string; metadata?: Record<string, unknown> };

/**
 * The sim's objects with `pods` as the API has them when their sandbox is being created: placed on the node, no
 * IPs yet, and no namespace path (only the runtime knows it, and gives it to the CNI plugin).
 */
function beforeSandbox(objects: KubeObject[], pods: string[]): KubeObject[] {
  return objects.map((o) => {
    if (o.kind !== "Pod" || !pods.includes(o.metadata?.name as string)) return o;
    const { annotations: _, ...metadata } = o.metadata ?? {};
    return { ...o, metadata, status: { phase: "Pending" } };
  });
}

/** Rewrites the cluster's file with `pods` as beforeSandbox has them, and waits until `agent` applied it. */
async function placeBeforeSandbox(agent: RunningAgent, clusterFile: string, cluster: SimCluster, pods: string[]) {
  const applied = new Promise((resolve) => agent.source.once("change", resolve));
  await writeFileAtomic(clusterFile, {
    apiVersion: "v1",
    kind: "List",
    items: beforeSandbox(cluster.objects() as KubeObject[], pods),
  });
  await applied;
}

test("an ADD for a pod whose record has not arrived yet waits for it, then enrolls it", async (t) => {
  t.timeout(30_000);
  const cluster = await clusterFor(t, {
    nodes: [{ name: "n1", pods: [{ name: "a", labels: meshed }, { name: "b" }] }],
  });
  const a = cluster.pod("a");
  const socket = join("/tmp", `ambit-cni-test-wait-${process.pid}.sock`);
  const mesh = await meshFor(t, cluster, { config: { cniSocket: socket } });
  const agent = mesh.agents[0];
  if (!agent) throw new Error("no agent");
  const write = async (items: KubeObject[]) => {
    const applied = new Promise((resolve) => agent.source.once("change", resolve));
    await writeFileAtomic(mesh.clusterFile, { apiVersion: "v1", kind: "List", items });
    await applied;
  };
  const objects = beforeSandbox(cluster.objects() as KubeObject[], ["a"]);
  await write(objects.filter((o) => !(o.kind === "Pod" && o.metadata?.name === "a")));
  const config = chainedConfig([a.ipv4], { agentSocket: socket });
  const adding = runPlugin(
    { command: "ADD", containerId: "s-a", netns: a.netnsPath, pod: { namespace: "default", name: "a" } },
    config,
  );
  await new Promise((r) => setTimeout(r, 500));
  t.is(ruleCount(a.netnsPath), 0, "not enrolled while the record is missing");
  await write(objects);
  const added = await adding;
  t.is(added.status, 0, added.stdout);
  t.true(added.ms >= 500, "ADD waited for the record");
  t.true(ruleCount(a.netnsPath) > 0, "and enrolled the pod when it came");
});

test("two agents on one node (an upgrade): the newer takes the CNI socket over, and the older stopping leaves it served", async (t) => {
  t.timeout(30_000);
  const cluster = await clusterFor(t, {
    nodes: [{ name: "n1", pods: [{ name: "a", labels: meshed }, { name: "b" }] }],
  });
  const [a, b] = ["a", "b"].map((n) => cluster.pod(n));
  if (!a || !b) throw new Error("pods missing");
  const socket = join("/tmp", `ambit-cni-test-takeover-${process.pid}.sock`);
  const mesh = await meshFor(t, cluster, { config: { cniSocket: socket } });
  const old = mesh.agents[0];
  if (!old) throw new Error("no agent");
  const replacement = await startAgent({ ...old.config }, silentLogger);
  t.teardown(() => replacement.stop());
  // No API access in the config: an ADD that finds no agent fails (code 11), whatever the pod.
  const config = (ips: string[]) => chainedConfig(ips, { agentSocket: socket, timeoutMs: 5000 });
  const add = (name: string, netns: string, ips: string[]) =>
    runPlugin({ command: "ADD", containerId: `s-${name}`, netns, pod: { namespace: "default", name } }, config(ips));

  await old.stop();
  const plain = await add("b", b.netnsPath, [b.ipv4]);
  t.is(plain.status, 0, `the socket is still served after the older agent stopped: ${plain.stdout}`);
  const enrolled = await add("a", a.netnsPath, [a.ipv4]);
  t.is(enrolled.status, 0, enrolled.stdout);
  t.true(
    replacement.redirector.enrolled().some((e) => e.pod.name === "a"),
    "the newer agent answered the meshed pod's ADD",
  );
  await replacement.stop();
  const down = await add("b", b.netnsPath, [b.ipv4]);
  t.like(down.json, { code: 11 }, "with both gone, the plugin finds no agent");
});

test("a meshed pod whose ADD cannot be enrolled keeps the agent unready, logged and counted; an ADD in its real sandbox makes it ready", async (t) => {
  t.timeout(30_000);
  const cluster = await clusterFor(t, { nodes: [{ name: "n1", pods: [{ name: "a", labels: meshed }] }] });
  const a = cluster.pod("a");
  const socket = join("/tmp", `ambit-cni-test-ready-${process.pid}.sock`);
  const { logger, lines } = capturingLogger("info");
  const mesh = await meshFor(t, cluster, { config: { cniSocket: socket }, logger });
  const agent = mesh.agents[0];
  if (!agent) throw new Error("no agent");
  await placeBeforeSandbox(agent, mesh.clusterFile, cluster, ["a"]);
  await agent.agent.settled();
  t.is((await ready(agent)).status, 200, "a pod without a sandbox yet has nothing to enroll");

  const config = chainedConfig([a.ipv4], { agentSocket: socket });
  const pod = { namespace: "default", name: "a" };
  const missing = `/var/run/netns/ambit-missing-${process.pid}`;
  const failed = await runPlugin({ command: "ADD", containerId: "s1", netns: missing, pod }, config);
  t.is(failed.status, 1, failed.stdout);
  const notReady = await ready(agent);
  t.is(notReady.status, 503);
  t.deepEqual(notReady.body.reasons, ["pod default/a: not enrolled: netns_not_found (retrying)"]);
  const metrics = await scrape(agent);
  t.regex(metrics, /^ambit_cni_requests_total\{command="add",result="failed"\} 1$/m);
  t.regex(metrics, /^ambit_pods_not_enrolled\{reason="netns_not_found"\} 1$/m);
  t.regex(metrics, /^ambit_enrollment_failures_total\{reason="netns_not_found"\} [1-9]/m);
  t.deepEqual((await configDump(agent)).notEnrolled, [{ pod: "default/a", reason: "netns_not_found" }]);
  // Which pod, why, and what happens next: the namespace registry's line, and the CNI server's.
  t.true(
    lines.some(
      (l) =>
        l.pod === "default/a" &&
        l.reason === "netns_not_found" &&
        /cannot open .*ambit-missing.*not enrolled, retried/.test(String(l.msg)),
    ),
    "the namespace's failure is logged",
  );
  t.true(
    lines.some(
      (l) =>
        l.pod === "default/a" &&
        l.container === "s1" &&
        l.reason === "netns_not_found" &&
        /enrollment failed; the plugin fails the call and the kubelet retries/.test(String(l.msg)),
    ),
    "the ADD's failure is logged",
  );

  const added = await runPlugin({ command: "ADD", containerId: "s2", netns: a.netnsPath, pod }, config);
  t.is(added.status, 0, added.stdout);
  t.deepEqual(await ready(agent), { status: 200, body: { ready: true, reasons: [] } });
  const after = await scrape(agent);
  t.notRegex(after, /^ambit_pods_not_enrolled\{/m, "no pod left unenrolled");
  t.regex(after, /^ambit_cni_requests_total\{command="add",result="enrolled"\} 1$/m);
  t.like(
    (await configDump(agent)).enrolled.find((e) => e.pod === "default/a"),
    { source: "cni" },
  );
});

/** TCP ports listening in a namespace, read from the kernel. */
function listeningPorts(netns: string): number[] {
  const out = execFileSync("nsenter", [`--net=${netns}`, "ss", "-Hltn"], { encoding: "utf8" });
  return [
    ...new Set(
      out
        .split("\n")
        .flatMap((l) => /:(\d+)\s/.exec(l)?.[1] ?? [])
        .map(Number),
    ),
  ].sort();
}

test("ambit-cni ADD returns once rules and listeners are in place; CHECK, DEL, agent down and bad input", async (t) => {
  t.timeout(60_000);
  const cluster = await clusterFor(t, {
    nodes: [{ name: "n1", pods: [{ name: "a", labels: meshed }, { name: "b" }, { name: "c", labels: meshed }] }],
  });
  const [a, b, c] = ["a", "b", "c"].map((n) => cluster.pod(n));
  if (!a || !b || !c) throw new Error("pods missing");
  const app = answerIn(c.netnsPath, c.ipv4, 8080, (s) => `c saw ${s.remoteAddress}`);
  t.teardown(() => closeServer(app));
  const socket = join("/tmp", `ambit-cni-test-${process.pid}.sock`);
  const mesh = await meshFor(t, cluster, { config: { cniSocket: socket } });
  const agent = mesh.agents[0];
  if (!agent) throw new Error("no agent");
  await placeBeforeSandbox(agent, mesh.clusterFile, cluster, ["a", "b"]);
  t.is(ruleCount(a.netnsPath), 0, "a's record has no IPs: the agent cannot enroll it by itself");
  await agent.agent.settled();
  const issued = agent.certs.snapshot().find((i) => i.pods.includes("default/a"));
  t.is(issued?.state, "ready", "a's certificate is fetched before its sandbox exists");
  t.falsy(
    agent.certs.snapshot().find((i) => i.pods.includes("default/b")),
    "none for b (not meshed)",
  );

  const config = (ips: string[]) => chainedConfig(ips, { agentSocket: socket, timeoutMs: 10_000 });
  const sandbox = (name: string, netns: string) => ({
    containerId: `sandbox-${name}`,
    netns,
    pod: { namespace: "default", name },
  });
  const dir = mkdtempSync(join(tmpdir(), "ambit-cni-cap-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const stopCapture = await startCapture(cluster.node("n1").netnsName, c.hostInterface, join(dir, "c.pcap"));
  const beforeAdd = Date.now();
  const added = await runPlugin({ command: "ADD", ...sandbox("a", a.netnsPath) }, config([a.ipv4]));
  t.is(added.status, 0, added.stdout);
  const dump = await configDump(agent);
  const enrolledA = dump.enrolled.find((e) => e.pod === "default/a");
  t.is(enrolledA?.source, "cni", "a's namespace came from the plugin's ADD");
  const at = Date.parse(enrolledA?.enrolledAt ?? "");
  t.true(at >= beforeAdd && at <= Date.now(), `enrolled during the ADD: ${enrolledA?.enrolledAt}`);
  t.regex(enrolledA?.enrolledAt ?? "", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, "ISO 8601");
  t.like(
    dump.enrolled.find((e) => e.pod === "default/c"),
    { source: "api" },
    "c, enrolled from its record at the agent's start",
  );
  t.deepEqual(added.json, config([a.ipv4]).prevResult, "prevResult passed through unchanged");
  // Checked right when ADD returned, before anything else could enroll the pod.
  t.true(ruleCount(a.netnsPath) > 0, "rules in place when ADD returns");
  t.true(
    agent.certs.snapshot().some((i) => i.pods.includes("default/a") && i.state === "ready"),
    "the enrolled pod holds its certificate (the prefetched reference passed on)",
  );
  const ports = listeningPorts(a.netnsPath);
  for (const port of [15001, 15006, 15008]) t.true(ports.includes(port), `listener ${port} in place: ${ports}`);
  t.is(
    await request(a.netnsPath, c.ipv4, 8080, "FIRST-CONNECTION-MARKER-5e1d"),
    `c saw ${a.ipv4}`,
    "the app's first connection gets through",
  );
  t.true(await outboundOverHbone(agent, "default/a"), "over HBONE, from a's own outbound listener");

  const check = await runPlugin({ command: "CHECK", ...sandbox("a", a.netnsPath) }, config([a.ipv4]));
  t.is(check.status, 0, check.stdout);
  t.is(check.stdout, "", "CHECK succeeds silently");

  const plain = await runPlugin({ command: "ADD", ...sandbox("b", b.netnsPath) }, config([b.ipv4]));
  t.is(plain.status, 0, plain.stdout);
  t.deepEqual(plain.json, config([b.ipv4]).prevResult);
  t.is(ruleCount(b.netnsPath), 0, "a pod outside the mesh is left alone");
  t.is(await request(b.netnsPath, c.ipv4, 8080, "CONTROL-PLAIN-MARKER-0b2a"), `c saw ${b.ipv4}`);
  const wire = await stopCapture("CONTROL-PLAIN-MARKER-0b2a");
  t.true(wire.includes("CONTROL-PLAIN-MARKER-0b2a"), "the capture sees plaintext payloads");
  t.false(wire.includes("FIRST-CONNECTION-MARKER-5e1d"), "the first connection after ADD never crossed in plaintext");

  // A DEL of an older sandbox of the pod does not undo the current one.
  const stale = await runPlugin({ command: "DEL", ...sandbox("a", a.netnsPath), containerId: "older" }, config([]));
  t.is(stale.status, 0, stale.stdout);
  t.true(ruleCount(a.netnsPath) > 0, "an older sandbox's DEL leaves the pod enrolled");
  const deleted = await runPlugin({ command: "DEL", ...sandbox("a", a.netnsPath) }, config([]));
  t.is(deleted.status, 0, deleted.stdout);
  t.is(ruleCount(a.netnsPath), 0, "DEL unenrolls: rules gone");
  t.false(listeningPorts(a.netnsPath).includes(15001), "and listeners");
  t.false(
    agent.redirector.enrolled().some((e) => e.pod.name === "a"),
    "the agent no longer counts the pod",
  );
  t.false(
    (await configDump(agent)).enrolled.some((e) => e.pod === "default/a"),
    "nor lists it in /config_dump",
  );
  // Its record (no IPs: a new sandbox may come) still holds the certificate for the next ADD.
  await agent.agent.settled();
  t.true(agent.certs.snapshot().some((i) => i.pods.includes("default/a") && i.state === "ready"));

  t.is(await rawRequest(socket, "not a request\n"), '{"error":{"code":"bad_request","message":"not JSON"}}\n');
  const metrics = await scrape(agent);
  for (const [command, result, n] of [
    ["add", "enrolled", 1],
    ["add", "not_meshed", 1],
    ["check", "enrolled", 1],
    ["del", "removed", 2],
    ["invalid", "bad_request", 1],
  ] as const) {
    t.true(
      metrics.includes(`ambit_cni_requests_total{command="${command}",result="${result}"} ${n}\n`),
      `${command} ${result} ${n}: ${metrics.split("\n").filter((l) => l.startsWith("ambit_cni_requests_total"))}`,
    );
  }
  t.regex(metrics, /^ambit_cni_request_duration_seconds_count\{command="add"\} 2$/m);
  t.regex(metrics, /^ambit_cni_request_duration_seconds_count\{command="del"\} 2$/m);
  t.regex(metrics, /^ambit_cni_request_duration_seconds_bucket\{le="10",command="add"\} 2$/m);

  const notJson = await runPlugin({ command: "ADD", ...sandbox("a", a.netnsPath) }, "{ not json");
  t.is(notJson.status, 1);
  t.like(notJson.json, { cniVersion: "1.0.0", code: 6 });
  t.is(typeof notJson.json.msg, "string");
  const noNetns = await runPlugin(
    { command: "ADD", ...sandbox("a", a.netnsPath), env: { CNI_NETNS: undefined } },
    config([a.ipv4]),
  );
  t.is(noNetns.status, 1);
  t.like(noNetns.json, { code: 4, msg: "CNI_NETNS is required for ADD" });
  const notChained = await runPlugin(
    { command: "ADD", ...sandbox("a", a.netnsPath) },
    { cniVersion: "1.0.0", name: "k" },
  );
  t.like(notChained.json, { code: 7 });

  // Agent down: a meshed pod's ADD fails (the kubelet retries); without API access to read labels, so does b's.
  await agent.stop();
  const down = await runPlugin({ command: "ADD", ...sandbox("a", a.netnsPath) }, config([a.ipv4]));
  t.is(down.status, 1);
  t.like(down.json, { code: 11 });
  t.regex(down.json.msg, /did not answer/);
  t.is(ruleCount(a.netnsPath), 0);
  const downDel = await runPlugin({ command: "DEL", ...sandbox("a", a.netnsPath) }, config([]));
  t.is(downDel.status, 0, "DEL never fails for want of an agent");
});

async function ready(agent: RunningAgent): Promise<{ status: number; body: { ready: boolean; reasons: string[] } }> {
  const res = await fetch(`http://${agent.endpoints.ready}/healthz/ready`);
  return { status: res.status, body: (await res.json()) as { ready: boolean; reasons: string[] } };
}

async function configDump(agent: RunningAgent): Promise<ConfigDump> {
  return (await (await fetch(`http://${agent.endpoints.admin}/config_dump`)).json()) as ConfigDump;
}

async function scrape(agent: RunningAgent): Promise<string> {
  return (await fetch(`http://${agent.endpoints.metrics}/metrics`)).text();
}

/** One line to the agent's CNI socket, as a client that is not the plugin would send it; the answer line. */
function rawRequest(path: string, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let answer = "";
    s.setEncoding("utf8");
    s.setTimeout(5000, () => s.destroy(new Error("no answer within 5 s")));
    s.on("data", (d: string) => {
      answer += d;
    });
    s.on("end", () => resolve(answer));
    s.on("error", reject);
    s.end(line);
  });
}

/** Whether the agent reported (within 3 s: workers report in batches) a mutual-TLS connection from `pod`. */
async function outboundOverHbone(agent: RunningAgent, pod: string): Promise<boolean> {
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline) {
    const { live, recent } = agent.connections.snapshot();
    if ([...live, ...recent].some((r) => r.reporter === "source" && r.pod === pod && r.tls)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}
