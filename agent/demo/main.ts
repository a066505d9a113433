/**
 * `make demo`: a two-node cluster made of network namespaces, a standalone `ambit ca`, one `ambit agent` process per
 * node, a few HTTP calls between pods, and what the agents saw of them. Needs root (namespaces, nftables).
 * AMBIT_DEMO_HOLD=1 keeps everything running after the report until Ctrl-C, to poke at it by hand.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { cleanupAllSync, cleanupStale, createSimCluster, type SimCluster } from "../sim/index.js";
import { runCalls, waitForMode } from "./calls.js";
import { handshakeSummary, nodeMetrics, refusals } from "./observe.js";
import { APP, CLI, PORTS, sleep, startAgents, startApps, startCa } from "./processes.js";
import { APP_PORT, CLUSTER_SPEC, namespaces, PERMISSIVE_CALLS, SERVERS, STRICT_CALLS } from "./scenario.js";

const out = (line = "") => process.stdout.write(`${line}\n`);
const since = (t: number) => `${((Date.now() - t) / 1000).toFixed(1)} s`;

async function demo(cluster: SimCluster, dir: string): Promise<number> {
  const podFile = join(dir, "pods.json");
  await cluster.writePodFile(podFile, { namespaces: namespaces("PERMISSIVE") });
  for (const node of cluster.nodes) {
    const pods = node.pods.map(
      (p) => `${p.name} ${p.ipv4}${p.labels["ambit.dev/mesh"] === "disabled" ? " (opted out)" : ""}`,
    );
    out(`  node ${node.name} (netns ${node.netnsName}): ${pods.join(", ")}`);
  }
  out("  namespace default is labelled ambit.dev/mesh=enabled; legacy carries ambit.dev/mesh=disabled");

  let t = Date.now();
  await startApps(cluster, SERVERS, APP_PORT);
  const ca = await startCa(cluster, dir, podFile);
  out(`  ambit ca serving ${ca.url} (in n1's node namespace, one bearer token per node) after ${since(t)}`);
  t = Date.now();
  const agents = await startAgents(cluster, dir, podFile, ca);
  out(`  ${agents.length} agents ready (pods redirected, certificates issued by the CA) in ${since(t)}`);

  out("\nPERMISSIVE (the default): every call should succeed");
  let failures = await runCalls(cluster, PERMISSIVE_CALLS, APP_PORT, out);
  out("  (the agent delivers inbound mesh and plaintext traffic from inside the pod: apps see their own IP as caller)");

  out("\nSTRICT: namespace default switched to PeerAuthentication STRICT by rewriting the pod file");
  await cluster.writePodFile(podFile, { namespaces: namespaces("STRICT") });
  await waitForMode(cluster, "STRICT");
  failures += await runCalls(cluster, STRICT_CALLS, APP_PORT, out);

  out("\nHBONE mTLS handshakes (ambit_tls_handshake_duration_seconds; tunnels are pooled, so fewer than calls):");
  const refused: string[] = [];
  for (const node of cluster.nodes) {
    const samples = await nodeMetrics(cluster, node);
    out(`  agent ${node.name}: ${handshakeSummary(samples)}`);
    refused.push(...refusals(samples).map((r) => `agent ${node.name}: ${r}`));
  }
  if (refused.length > 0) out(`refused (ambit_connections_refused_total):\n  ${refused.join("\n  ")}`);

  const n1 = cluster.nodes[0]?.netnsName;
  out("\nWhere to look (while it runs; AMBIT_DEMO_HOLD=1 keeps it up):");
  const get = `ip netns exec ${n1} node ${relative(process.cwd(), APP)} get`;
  out(`  metrics  ${get} http://127.0.0.1:${PORTS.metrics}/metrics   (same ports in every node's namespace)`);
  out(`  tap      ip netns exec ${n1} node ${relative(process.cwd(), CLI)} tap --admin 127.0.0.1:${PORTS.admin}`);
  out(`           /connections and /config_dump on 127.0.0.1:${PORTS.admin}, readiness :${PORTS.ready}/healthz/ready`);
  out(`  logs     ${[ca.process, ...agents].map((p) => p.log).join("\n           ")}`);
  out(`  pods     ${podFile}`);
  return failures;
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    process.stderr.write("make demo needs root: it creates network namespaces and nftables rules\n");
    return 2;
  }
  const started = Date.now();
  const dir = mkdtempSync(join(tmpdir(), "ambit-demo-"));
  let cluster: SimCluster | undefined;
  let keep = false;
  let stopping = false;
  const prefix = `dm${randomBytes(2).toString("hex")}`;
  let creating: Promise<unknown> = Promise.resolve();
  // Registered before the cluster exists, so it runs first; the simulator's own hook then kills what it tracks.
  // Namespaces whose `ip netns add` was in flight are not tracked yet: wait for creation to settle (it fails fast
  // once its node namespaces are gone), then sweep everything with our prefix.
  const interrupted = (signal: NodeJS.Signals) => {
    stopping = true;
    process.stderr.write(`\n${signal}: stopping processes, deleting namespaces ${prefix}-* and ${dir}\n`);
    cleanupAllSync();
    void creating
      .catch(() => {})
      .then(() => sleep(200))
      .then(() => cleanupStale(prefix))
      .catch((err: unknown) => process.stderr.write(`cleanup: ${String(err)}\n`))
      .finally(() => {
        rmSync(dir, { recursive: true, force: true });
        process.exit(130);
      });
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
  try {
    out(`ambit demo: 2 nodes, 4 pods as network namespaces ${prefix}-*; logs in ${dir}`);
    creating = createSimCluster({ ...CLUSTER_SPEC, prefix });
    cluster = (await creating) as SimCluster;
    const failures = await demo(cluster, dir);
    if (process.env.AMBIT_DEMO_HOLD === "1") {
      out("\nholding: press Ctrl-C to tear everything down");
      await new Promise(() => setInterval(() => {}, 1 << 30));
    }
    keep = failures > 0;
    out(
      failures === 0
        ? `\ndemo OK in ${since(started)}`
        : `\ndemo FAILED: ${failures} call(s) did not behave as expected; logs kept in ${dir}`,
    );
    return failures === 0 ? 0 : 1;
  } catch (err) {
    if (stopping) return 130;
    keep = true;
    process.stderr.write(`\ndemo FAILED: ${err instanceof Error ? err.message : String(err)}\n`);
    process.stderr.write(`logs kept in ${dir}\n`);
    return 1;
  } finally {
    await cluster?.destroy();
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
