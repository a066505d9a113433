/**
 * `make demo`: a two-node cluster made of network namespaces, a standalone `ambit ca`, one `ambit agent` process per
 * node, a few HTTP calls between pods, and what the agents saw of them. Needs root (namespaces, nftables).
 * AMBIT_DEMO_HOLD=1 keeps everything running after the report until Ctrl-C, to poke at it by hand.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parseManifests } from "../kube/manifest-source.js";
import {
  cleanupAllSync,
  cleanupStale,
  createSimCluster,
  endpointsOf,
  type SimCluster,
  writeFileAtomic,
} from "../sim/index.js";
import { runCalls, waitForMode } from "./calls.js";
import { handshakeSummary, nodeMetrics, refusals } from "./observe.js";
import { APP, CLI, PORTS, sleep, startAgents, startApps, startCa } from "./processes.js";
import { APP_PORT, CLUSTER_SPEC, MESH_NAMESPACE, MESH_NAMESPACE_LABELS, PHASES, SERVERS } from "./scenario.js";

const out = (line = "") => process.stdout.write(`${line}\n`);
const since = (t: number) => `${((Date.now() - t) / 1000).toFixed(1)} s`;

/** The seed's PeerAuthentication manifests, exactly as written (deploy/examples/), one object per document. */
const SEED = fileURLToPath(new URL("../../../deploy/examples/peer-authentication-seed.yaml", import.meta.url));

/** The objects left after applying `docs` in order, as `kubectl apply` leaves them: a later one replaces its name. */
function appliedInOrder(docs: readonly unknown[]): unknown[] {
  const byName = new Map<string, unknown>();
  for (const doc of docs) {
    const o = doc as { kind?: string; metadata?: { namespace?: string; name?: string } };
    byName.set(`${o.kind}/${o.metadata?.namespace}/${o.metadata?.name}`, doc);
  }
  return [...byName.values()];
}

async function demo(cluster: SimCluster, dir: string): Promise<number> {
  const manifests = join(dir, "manifests");
  mkdirSync(manifests);
  await cluster.writeManifests(join(manifests, "cluster.json"), MESH_NAMESPACE_LABELS);
  const seed = parseManifests(readFileSync(SEED, "utf8"));
  const applySeed = (n: number) =>
    writeFileAtomic(join(manifests, "peer-authentication.json"), {
      apiVersion: "v1",
      kind: "List",
      items: appliedInOrder(seed.slice(0, n)),
    });
  await applySeed(PHASES[0]?.seedDocuments ?? 1);
  for (const node of cluster.nodes) {
    const pods = node.pods.map((p) => `${p.namespace}/${p.name} ${p.ipv4}`);
    out(`  node ${node.name} (netns ${node.netnsName}): ${pods.join(", ")}`);
  }
  for (const s of cluster.services) {
    const endpoints = endpointsOf(s, cluster.pods).map((p) => p.name);
    out(`  Service ${s.namespace}/${s.name} ${s.clusterIPs[0]}:${s.ports[0]?.port} -> ${endpoints.join(", ")}`);
  }
  out(`  namespace ${MESH_NAMESPACE} is labelled ambit.dev/mesh=enabled; jobs/batch is outside the mesh`);
  out(`  cluster described by Kubernetes manifests in ${manifests}, followed live by the CA and the agents`);

  let t = Date.now();
  await startApps(cluster, SERVERS, APP_PORT);
  const ca = await startCa(cluster, dir, manifests);
  out(`  ambit ca serving ${ca.url} (in n1's node namespace, one bearer token per node) after ${since(t)}`);
  t = Date.now();
  const agents = await startAgents(cluster, dir, manifests, ca);
  out(`  ${agents.length} agents ready (pods redirected, certificates issued by the CA) in ${since(t)}`);

  let failures = 0;
  for (const phase of PHASES) {
    out(`\n${phase.title}`);
    await applySeed(phase.seedDocuments);
    const mode = phase.seedDocuments >= 2 ? "STRICT" : "PERMISSIVE";
    await waitForMode(cluster, `${MESH_NAMESPACE}/backend-1`, mode);
    if (phase.seedDocuments >= 3) await waitForMode(cluster, `${MESH_NAMESPACE}/legacy-service`, "DISABLE");
    const result = await runCalls(cluster, phase.calls, out);
    failures += result.failures;
    const viaService = phase.calls.filter((c) => c.to.startsWith("svc/")).length;
    if (viaService >= 2) {
      const endpoints = new Set(result.answeredBy.filter((n) => n.startsWith("backend-")));
      out(`  Service backend spread its calls over: ${[...endpoints].sort().join(", ")}`);
      if (endpoints.size < 2) {
        out("  problem: expected both endpoints of Service backend to answer");
        failures += 1;
      }
    }
  }
  out(
    "  (the agent delivers inbound mesh and plaintext traffic from inside the pod, from the caller's address: apps see who called)",
  );

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
  out(`  cluster  ${manifests} (edit or add manifests: the agents follow)`);
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
    out(`ambit demo: 2 nodes, 6 pods as network namespaces ${prefix}-*; logs in ${dir}`);
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
