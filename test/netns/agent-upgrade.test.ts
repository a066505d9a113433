/**
 * An agent replaced by a new process on its node, as a DaemonSet with maxSurge does it: the new agent starts beside
 * the old one, opens its listeners in the pods beside the old one's (SO_REUSEPORT), and only then does the old one
 * get SIGTERM and drain. Steady new connections both ways and a long transfer run through the whole handover.
 * Then the other promise: after a crash (SIGKILL) the pods fail closed and a new agent restores them; its time is
 * measured and printed.
 */
import { type ChildProcess, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import type { SimCluster } from "../../agent/sim/index.js";
import { within } from "../support/within.js";
import { localAgentArgs } from "./support/agent-args.js";
import { startCapture } from "./support/capture.js";
import { clusterFor } from "./support/cluster.js";
import { ruleCount } from "./support/nft.js";
import { answerIn, closeServer, dialFrom, request } from "./support/sockets.js";
import { transferServer } from "./support/transfer.js";

const meshed = { "ambit.dev/mesh": "enabled" };
const MARKER = "UPGRADE-PLAINTEXT-MARKER-5d1e";

async function eventually(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 15_000): Promise<number> {
  const started = performance.now();
  while (performance.now() - started < timeoutMs) {
    if (await Promise.resolve(check()).catch(() => false)) return performance.now() - started;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Listening sockets on `port` in the namespace at `netnsPath` (one per agent once both listen). */
function listeners(netnsPath: string, port: number): number {
  const out = execFileSync("nsenter", [`--net=${netnsPath}`, "ss", "-Hltn", `sport = :${port}`], { encoding: "utf8" });
  return out.split("\n").filter((l) => l.includes("0.0.0.0:")).length;
}

/** ambit's table as nft prints it, without handles: what a re-applied table must equal. */
function tableText(netnsPath: string): string {
  return execFileSync("nsenter", [`--net=${netnsPath}`, "nft", "list", "table", "inet", "ambit"], { encoding: "utf8" });
}

/** Sum of a counter's series with `labels` from an agent's /metrics (run inside the node's namespace). */
function counter(cluster: SimCluster, node: string, port: number, name: string, labels: string): number {
  const text = execFileSync(
    "ip",
    ["netns", "exec", cluster.node(node).netnsName, "curl", "-s", `127.0.0.1:${port}/metrics`],
    {
      encoding: "utf8",
    },
  );
  return text
    .split("\n")
    .filter((l) => l.startsWith(`${name}{`) && l.includes(labels))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
}

/** Deterministic bytes, as support/transfer.ts's, so the server's digest and download can be checked. */
function pattern(offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) b[i] = (offset + i) % 251;
  return b;
}

/**
 * A transfer paced to last about `ms`: `up` bytes sent in steps, `down` asked back (transferServer's protocol).
 * Resolves once both directions were verified against their SHA-256.
 */
async function pacedTransfer(netns: string, ip: string, port: number, up: number, down: number, ms: number) {
  const s = await dialFrom(netns, ip, port);
  const step = 64 * 1024;
  const pause = ms / (up / step);
  const sent = createHash("sha256");
  const received = createHash("sha256");
  let digest = Buffer.alloc(0);
  let got = 0;
  const done = new Promise<void>((resolve, reject) => {
    s.on("data", (chunk: Buffer) => {
      if (digest.length < 32) {
        const need = 32 - digest.length;
        digest = Buffer.concat([digest, chunk.subarray(0, need)]);
        chunk = chunk.subarray(need);
      }
      got += chunk.length;
      received.update(chunk);
    });
    s.on("error", reject);
    s.on("end", () => {
      s.end();
      if (!digest.equals(sent.digest())) return reject(new Error("upload corrupted"));
      if (got !== down) return reject(new Error(`download: ${got} of ${down} bytes`));
      const want = createHash("sha256");
      for (let o = 0; o < down; o += step) want.update(pattern(7 + o, Math.min(step, down - o)));
      if (!received.digest().equals(want.digest())) return reject(new Error("download corrupted"));
      resolve();
    });
  });
  const header = Buffer.alloc(8);
  header.writeBigUInt64BE(BigInt(down));
  s.write(header);
  for (let o = 0; o < up; o += step) {
    const piece = pattern(o, Math.min(step, up - o));
    sent.update(piece);
    if (!s.write(piece)) await new Promise((r) => s.once("drain", r));
    await new Promise((r) => setTimeout(r, pause));
  }
  s.end();
  await done;
}

/** New connections one after another from `from` to `to`, `parallel` at a time, until stop(); counts outcomes. */
function steadyLoad(from: string, to: string, port: number, parallel: number) {
  const result = { ok: 0, failed: 0, errors: new Map<string, number>() };
  let running = true;
  const loops = Array.from({ length: parallel }, async () => {
    while (running) {
      try {
        const answer = await request(from, to, port, MARKER);
        if (answer.startsWith("hi")) result.ok++;
        else throw Object.assign(new Error(`answer ${JSON.stringify(answer)}`), { code: "bad_answer" });
      } catch (err) {
        result.failed++;
        const code = (err as { code?: string }).code ?? String(err);
        result.errors.set(code, (result.errors.get(code) ?? 0) + 1);
      }
    }
  });
  return {
    result,
    stop: async () => {
      running = false;
      await Promise.all(loops);
      return result;
    },
  };
}

test("an agent replaced by a new process: no failed connect either way, a long transfer intact, no plaintext; a crash is restored within a measured bound", async (t) => {
  t.timeout(90_000);
  const cluster = await clusterFor(t, {
    nodes: [
      { name: "n1", pods: [{ name: "a", labels: meshed }] },
      { name: "n2", pods: [{ name: "b", labels: meshed }] },
    ],
  });
  const [a, b] = [cluster.pod("a"), cluster.pod("b")];
  const servers = [
    answerIn(b.netnsPath, b.ipv4, 8080, () => "hi from b"),
    answerIn(a.netnsPath, a.ipv4, 8080, () => "hi from a"),
    transferServer(b.netnsPath, b.ipv4, 9000),
  ];
  t.teardown(() => Promise.all(servers.map(closeServer)));
  const dir = mkdtempSync(join(tmpdir(), "ambit-upgrade-"));
  const manifests = join(dir, "cluster.json");
  await cluster.writeManifests(manifests);
  const children = new Set<ChildProcess>();
  t.teardown(() => {
    for (const c of children) c.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  const start = (node: string, metricsPort: number) => {
    const args = localAgentArgs(node, manifests, join(dir, "ca"));
    args[args.indexOf("--metrics") + 1] = `127.0.0.1:${metricsPort}`;
    const child = cluster.spawnIn(
      cluster.node(node).netnsName,
      process.execPath,
      ["dist/agent/cli.js", ...args, "--drain-seconds", "20"],
      { stdio: ["ignore", "ignore", "inherit"] },
    );
    children.add(child);
    return child;
  };
  const opened = (node: string, port: number, reporter: string) =>
    counter(cluster, node, port, "istio_tcp_connections_opened_total", `reporter="${reporter}"`);

  // n2 first: it creates the shared local CA.
  const old = start("n2", 15990);
  await eventually("b enrolled", () => listeners(b.netnsPath, 15008) === 1);
  start("n1", 15990);
  await eventually("a enrolled", () => listeners(a.netnsPath, 15008) === 1);
  await eventually("a -> b through the mesh", async () => (await request(a.netnsPath, b.ipv4, 8080)) === "hi from b");
  await eventually("b -> a through the mesh", async () => (await request(b.netnsPath, a.ipv4, 8080)) === "hi from a");
  const table = tableText(b.netnsPath);

  const stopCapture = await startCapture(cluster.node("n2").netnsName, b.hostInterface, join(dir, "wire.pcap"));
  const inbound = steadyLoad(a.netnsPath, b.ipv4, 8080, 3);
  const outbound = steadyLoad(b.netnsPath, a.ipv4, 8080, 3);
  const long = pacedTransfer(a.netnsPath, b.ipv4, 9000, 24 * 1024 * 1024, 4 * 1024 * 1024, 9_000);
  await new Promise((r) => setTimeout(r, 1000));

  // The new agent: its listeners open beside the old ones once it has the pod's certificate.
  const oldBefore = opened("n2", 15990, "source");
  const spawned = performance.now();
  start("n2", 15991);
  const ready = await eventually("the new agent's listeners beside the old ones", () => {
    return listeners(b.netnsPath, 15008) === 2 && listeners(b.netnsPath, 15001) === 2;
  });
  t.is(tableText(b.netnsPath), table, "the new agent re-applied the same table");
  // Both agents listen: the kernel hashes b's new outbound connections between them.
  const newBefore = opened("n2", 15991, "source");
  await new Promise((r) => setTimeout(r, 2000));
  const spread = { old: opened("n2", 15990, "source") - oldBefore, new: opened("n2", 15991, "source") - newBefore };

  const signalled = performance.now();
  old.kill("SIGTERM");
  await eventually("the old agent's listeners closed", () => listeners(b.netnsPath, 15008) === 1, 5_000);
  const closedMs = performance.now() - signalled;
  const [code] = (await Promise.race([
    once(old, "exit"),
    new Promise((_, reject) => setTimeout(() => reject(new Error("old agent did not exit within 25 s")), 25_000)),
  ])) as [number];
  children.delete(old);
  const exitedMs = performance.now() - signalled;
  await new Promise((r) => setTimeout(r, 1000));
  const [inResult, outResult] = await Promise.all([inbound.stop(), outbound.stop()]);
  // Bounded: a transfer cut by the old agent may stall rather than fail.
  await t.notThrowsAsync(
    within(long, 15_000, "the long transfer"),
    "the long transfer completed intact through the handover",
  );
  const wire = await stopCapture();

  t.log(
    `handover: new agent listening ${(ready / 1000).toFixed(2)} s after start (${((performance.now() - spawned) / 1000).toFixed(1)} s ago); ` +
      `old agent's listeners closed ${closedMs.toFixed(0)} ms after SIGTERM, exited (code ${code}) after ${(exitedMs / 1000).toFixed(2)} s`,
  );
  t.log(
    `connections a->b ${inResult.ok} ok / ${inResult.failed} failed, b->a ${outResult.ok} ok / ${outResult.failed} failed ` +
      `${JSON.stringify([...inResult.errors, ...outResult.errors])}; b's outbound while both listened: old ${spread.old}, new ${spread.new}`,
  );
  t.is(code, 0);
  t.true(inResult.ok > 50 && outResult.ok > 50, "traffic ran through the handover");
  t.is(inResult.failed + outResult.failed, 0, "no connection failed");
  t.true(wire.length > 1000, "the capture saw the traffic");
  t.false(wire.includes(MARKER), "no payload crossed between the nodes in plaintext");
  t.is(tableText(b.netnsPath), table, "the old agent left the rules in place");

  // A crash: the new agent is killed; the pod fails closed; a fresh agent restores service.
  const current = [...children].find((c) => c !== old && c.spawnargs.includes("n2") && c.exitCode === null);
  if (!current) throw new Error("no running n2 agent");
  current.kill("SIGKILL");
  await once(current, "exit");
  children.delete(current);
  await t.throwsAsync(request(a.netnsPath, b.ipv4, 8080), undefined, "refused while no agent runs (fails closed)");
  t.true(ruleCount(b.netnsPath) > 0);
  const restarted = performance.now();
  start("n2", 15992);
  const restored = await eventually(
    "service restored",
    async () => (await request(a.netnsPath, b.ipv4, 8080)) === "hi from b",
    20_000,
  );
  t.log(`after SIGKILL, a new agent restored a -> b ${(restored / 1000).toFixed(2)} s after it was started`);
  t.true(performance.now() - restarted < 20_000);
});
