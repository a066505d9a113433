/**
 * If the agent's thread cannot return to its own network namespace, everything it opens afterwards would open in a
 * pod's. The agent must stop at once, on every path that enters a namespace, with a log line saying why; the
 * pods keep their rules, so their traffic is refused (fail closed) until an agent returns.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import test, { type ExecutionContext } from "ava";
import { AGENT_NODE_FLAGS } from "../../agent/node/runtime-flags.js";
import { EXIT_NETNS_LOST } from "../../agent/pod-netns.js";
import { type SimCluster, writeFileAtomic } from "../../agent/sim/index.js";
import { localAgentArgs } from "./support/agent-args.js";
import { clusterFor } from "./support/cluster.js";
import { ruleCount } from "./support/nft.js";
import { answerIn, closeServer, request } from "./support/sockets.js";

const meshed = { "ambit.dev/mesh": "enabled" };
const script = join(import.meta.dirname, "support", "lost-netns-agent.js");
const fdScript = join(import.meta.dirname, "support", "lost-netns-fd.js");

/** The sabotaged agent for node n1, once its fault is in place; resolves `exited` with its status and log lines. */
async function sabotagedAgent(t: ExecutionContext, cluster: SimCluster) {
  const dir = mkdtempSync(join(tmpdir(), "ambit-netns-lost-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const manifests = join(dir, "cluster.json");
  await cluster.writeManifests(manifests);
  const args = localAgentArgs("n1", manifests, join(dir, "ca"));
  // stdin is a pipe the script watches: if this test process dies, the script exits too.
  const child = spawn(process.execPath, [...AGENT_NODE_FLAGS, script, ...args.slice(1)], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  t.teardown(() => child.kill("SIGKILL"));
  const lines: Array<Record<string, unknown>> = [];
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  const ready = new Promise<void>((resolve) => {
    createInterface({ input: child.stdout }).on("line", (line) => {
      const parsed = JSON.parse(line) as Record<string, unknown>;
      lines.push(parsed);
      if (parsed.msg === "sabotaged") resolve();
    });
  });
  const exited = once(child, "close").then(([code]) => ({ code: code as number | null, lines, stderr }));
  await Promise.race([ready, exited.then((r) => Promise.reject(new Error(`agent exited early: ${r.stderr}`)))]);
  return { manifests, exited };
}

function fatalLine(lines: Array<Record<string, unknown>>) {
  return lines.find((l) => l.level === "fatal" && String(l.msg).includes("could not return"));
}

test("a connection whose dial cannot return home stops the agent; the pod stays closed", async (t) => {
  const cluster = await clusterFor(t, {
    nodes: [{ name: "n1", pods: [{ name: "a", labels: meshed }, { name: "c" }] }],
  });
  const [a, c] = [cluster.pod("a"), cluster.pod("c")];
  const app = answerIn(c.netnsPath, c.ipv4, 8080, () => "hello from c");
  t.teardown(() => closeServer(app));
  const { exited } = await sabotagedAgent(t, cluster);
  // a -> c is passed through: the agent dials c from inside a's namespace, and dies before relaying anything.
  const answer = await request(a.netnsPath, c.ipv4, 8080).catch((err: Error) => err.message);
  t.not(answer, "hello from c");
  const { code, lines } = await exited;
  t.is(code, EXIT_NETNS_LOST);
  t.truthy(fatalLine(lines), "a fatal line says why");
  t.true(ruleCount(a.netnsPath) > 0, "a's rules stay");
  await t.throwsAsync(request(a.netnsPath, c.ipv4, 8080), { code: "ECONNREFUSED" }, "a's traffic is refused");
});

test("an enrollment that cannot return home stops the agent", async (t) => {
  const cluster = await clusterFor(t, {
    nodes: [{ name: "n1", pods: [{ name: "a", labels: meshed }, { name: "c" }] }],
  });
  const { manifests, exited } = await sabotagedAgent(t, cluster);
  const labelled = cluster.objects().map((o) => {
    const pod = o as { kind?: string; metadata: { name?: string; labels?: object } };
    return pod.kind === "Pod" && pod.metadata.name === "c"
      ? { ...pod, metadata: { ...pod.metadata, labels: { ...pod.metadata.labels, ...meshed } } }
      : o;
  });
  await writeFileAtomic(manifests, { apiVersion: "v1", kind: "List", items: labelled });
  const { code, lines } = await exited;
  t.is(code, EXIT_NETNS_LOST);
  t.truthy(fatalLine(lines));
  t.false(
    lines.some((l) => String(l.msg).startsWith("enrollment failed")),
    "not treated as an ordinary, retried failure",
  );
});

for (const mode of ["run", "socket"]) {
  test(`entering by descriptor (${mode}) that cannot return home stops the process`, async (t) => {
    const cluster = await clusterFor(t, { nodes: [{ name: "n1", pods: [{ name: "a" }] }] });
    const child = spawn(process.execPath, [fdScript, cluster.pod("a").netnsPath, mode], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    t.teardown(() => child.kill("SIGKILL"));
    const lines: Array<Record<string, unknown>> = [];
    createInterface({ input: child.stdout }).on("line", (line) => lines.push(JSON.parse(line)));
    let stderr = "";
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    const [code] = await once(child, "close");
    t.is(code, EXIT_NETNS_LOST, stderr);
    t.truthy(fatalLine(lines));
    t.false(
      lines.some((l) => l.msg === "survived"),
      "nothing runs after the failed return",
    );
  });
}
