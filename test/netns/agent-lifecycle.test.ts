import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import type { SimCluster } from "../../agent/sim/index.js";
import { writeFileAtomic } from "../../agent/sim/index.js";
import { localAgentArgs } from "./support/agent-args.js";
import { meshFor } from "./support/agents.js";
import { clusterFor } from "./support/cluster.js";
import { ruleCount } from "./support/nft.js";
import { answerIn, closeServer, request } from "./support/sockets.js";

const meshed = { "ambit.dev/mesh": "enabled" };

async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

type KubeObject = Record<string, unknown> & { kind?: string; metadata?: { name?: string; labels?: object } };

/** The sim's objects with the pod `name` changed by `change`. */
function editPod(objects: KubeObject[], name: string, change: (pod: KubeObject) => KubeObject): KubeObject[] {
  return objects.map((o) => (o.kind === "Pod" && o.metadata?.name === name ? change(structuredClone(o)) : o));
}

test("label changes in the manifests enroll and unenroll pods live; a bad file or a bad pod leaves the rest alone", async (t) => {
  const cluster = await clusterFor(t, {
    nodes: [{ name: "n1", pods: [{ name: "a", labels: meshed }, { name: "c" }, { name: "d", labels: meshed }] }],
  });
  const [a, c, d] = ["a", "c", "d"].map((n) => cluster.pod(n));
  if (!a || !c || !d) throw new Error("pods missing");
  const app = answerIn(d.netnsPath, d.ipv4, 8080, (s) => `d saw ${s.remoteAddress}`);
  t.teardown(() => closeServer(app));
  const mesh = await meshFor(t, cluster);
  const agent = mesh.agents[0];
  if (!agent) throw new Error("no agent");
  const enrolled = () =>
    agent.redirector
      .enrolled()
      .map((e) => e.pod.name)
      .sort();
  const write = (objects: unknown) =>
    writeFileAtomic(mesh.clusterFile, { apiVersion: "v1", kind: "List", items: objects });
  t.deepEqual(enrolled(), ["a", "d"]);

  // Opt c in by labelling its namespace; opt d out with its own label.
  const relabelled = editPod(cluster.objects([{ name: "default", labels: meshed }]), "d", (pod) => ({
    ...pod,
    metadata: { ...pod.metadata, labels: { "ambit.dev/mesh": "disabled" } },
  }));
  await write(relabelled);
  await eventually("c enrolled, d unenrolled", async () => enrolled().join() === "a,c");
  t.is(ruleCount(d.netnsPath), 0, "d's table is gone");
  t.is(await request(c.netnsPath, d.ipv4, 8080), `d saw ${c.ipv4}`, "c -> d passes through (d not meshed)");

  // A file that does not parse changes nothing.
  await writeFileAtomic(mesh.clusterFile, "{ not: [json");
  await new Promise((r) => setTimeout(r, 300));
  t.deepEqual(enrolled(), ["a", "c"]);
  t.true(
    agent.source.health().reasons.some((r) => r.includes("cluster.json")),
    "the source says which file",
  );
  // An invalid update of a pod (an address that is not one) is ignored: the valid version stays in force.
  await write(
    editPod(relabelled, "a", (pod) => ({ ...pod, status: { phase: "Running", podIPs: [{ ip: "10.0.0.999" }] } })),
  );
  await new Promise((r) => setTimeout(r, 300));
  t.deepEqual(enrolled(), ["a", "c"]);
  // A pod whose sandbox has no IPs (yet, or any more) is not enrolled; the others stay.
  await write(editPod(relabelled, "a", (pod) => ({ ...pod, status: { phase: "Pending" } })));
  await eventually("a unenrolled, c kept", async () => enrolled().join() === "c");
  t.is(await request(c.netnsPath, d.ipv4, 8080), `d saw ${c.ipv4}`);
});

/** `ambit agent` in the node's namespace; the simulator kills it with the cluster, even if the test dies first. */
function startAgentProcess(cluster: SimCluster, node: string, args: string[]): ChildProcess {
  return cluster.spawnIn(cluster.node(node).netnsName, process.execPath, ["dist/agent/cli.js", ...args], {
    stdio: ["ignore", "ignore", "inherit"],
  });
}

test("a killed agent leaves its pods failing closed; a restarted agent re-enrolls them without duplicates", async (t) => {
  t.timeout(60_000);
  const cluster = await clusterFor(t, {
    nodes: [
      { name: "n1", pods: [{ name: "a", labels: meshed }] },
      { name: "n2", pods: [{ name: "b", labels: meshed }] },
    ],
  });
  const [a, b] = [cluster.pod("a"), cluster.pod("b")];
  const app = answerIn(b.netnsPath, b.ipv4, 8080, () => "hello from b");
  t.teardown(() => closeServer(app));
  const dir = mkdtempSync(join(tmpdir(), "ambit-life-"));
  const manifests = join(dir, "cluster.json");
  await cluster.writeManifests(manifests);
  const children = new Set<ChildProcess>();
  t.teardown(() => {
    for (const c of children) c.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  const start = (node: string) => {
    const child = startAgentProcess(cluster, node, localAgentArgs(node, manifests, join(dir, "ca")));
    children.add(child);
    return child;
  };
  // One after the other: the first agent creates the shared local CA. Until both enrolled their pods the traffic
  // goes direct, so wait for the rules, then for the mesh path.
  start("n2");
  await eventually("b enrolled", async () => ruleCount(b.netnsPath) > 0);
  const n1 = start("n1");
  await eventually("a enrolled", async () => ruleCount(a.netnsPath) > 0);
  await eventually(
    "a -> b through the mesh",
    async () => (await request(a.netnsPath, b.ipv4, 8080)) === "hello from b",
  );
  const rules = ruleCount(a.netnsPath);
  t.true(rules > 0);

  n1.kill("SIGKILL");
  await once(n1, "exit");
  children.delete(n1);
  await t.throwsAsync(request(a.netnsPath, b.ipv4, 8080), { code: "ECONNREFUSED" }, "no plaintext path while down");
  t.is(ruleCount(a.netnsPath), rules, "rules stay in place");

  start("n1");
  await eventually(
    "a -> b again after restart",
    async () => (await request(a.netnsPath, b.ipv4, 8080)) === "hello from b",
  );
  t.is(ruleCount(a.netnsPath), rules, "re-enrollment replaced the table: same rules, no duplicates");
});
