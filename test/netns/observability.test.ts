import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test from "ava";
import { loadOrCreateCa } from "../../agent/identity/ca-files.js";
import { silentLogger } from "../../agent/log.js";
import type { AgentConfig } from "../../agent/node/config.js";
import { type RunningAgent, startAgent } from "../../agent/node/run-agent.js";
import { localAgentConfig, meshFor } from "./support/agents.js";
import { clusterFor } from "./support/cluster.js";
import { freePort, prometheusFor } from "./support/prometheus.js";
import { answerIn, closeServer, request } from "./support/sockets.js";

const meshed = { "ambit.dev/mesh": "enabled" };
const SA_A = "spiffe://cluster.local/ns/default/sa/sa-a";
const SA_B = "spiffe://cluster.local/ns/default/sa/sa-b";
const CLI = join(process.cwd(), "dist/agent/cli.js");
const run = promisify(execFile);

async function ready(address: string): Promise<{ status: number; body: { ready: boolean; reasons: string[] } }> {
  const res = await fetch(`http://${address}/healthz/ready`);
  return { status: res.status, body: (await res.json()) as { ready: boolean; reasons: string[] } };
}

test("Prometheus scrapes both agents: handshakes, Istio TCP metrics with principals, CPU; readiness; tap and certs", async (t) => {
  const cluster = await clusterFor(t, {
    nodes: [
      { name: "n1", pods: [{ name: "a", labels: meshed, serviceAccount: "sa-a" }] },
      { name: "n2", pods: [{ name: "b", labels: meshed, serviceAccount: "sa-b" }] },
    ],
  });
  const a = cluster.pod("a");
  const b = cluster.pod("b");
  const server = answerIn(b.netnsPath, b.ipv4, 8080, () => "x".repeat(5000));
  t.teardown(() => closeServer(server));
  const beforeStart: Array<{ status: number; reasons: string[] }> = [];
  const mesh = await meshFor(t, cluster, {
    hooks: () => ({
      metrics: { cpuWindowMs: 1000 },
      // Servers are up, the pod source is not: the probe must say "not ready" and why.
      serving: async (endpoints) => {
        const r = await ready(endpoints.ready);
        beforeStart.push({ status: r.status, reasons: r.body.reasons });
      },
    }),
  });
  t.deepEqual(beforeStart, [
    { status: 503, reasons: ["cluster source not started"] },
    { status: 503, reasons: ["cluster source not started"] },
  ]);
  for (const agent of mesh.agents)
    t.deepEqual(await ready(agent.endpoints.ready), { status: 200, body: { ready: true, reasons: [] } });

  const prom = await prometheusFor(
    t,
    mesh.agents.map((x) => x.endpoints.metrics),
  );
  for (let i = 0; i < 5; i += 1) t.is((await request(a.netnsPath, b.ipv4, 8080, "hello")).length, 5000);

  const series = `istio_tcp_sent_bytes_total{source_principal="${SA_A}",destination_principal="${SA_B}",connection_security_policy="mutual_tls"}`;
  // Both agents report the connections, n1 as the source and n2 as the destination, each the five responses' bytes
  // (waited for: the relays finish, and the next scrape happens, a moment after the clients saw the end).
  await prom.waitFor(`count(${series} == ${5 * 5000}) == 2`);
  const sent = await prom.query(series);
  t.deepEqual(sent.map((s) => s.metric.reporter).sort(), ["destination", "source"]);
  for (const s of sent) {
    t.is(s.metric.source_workload, "a");
    t.is(s.metric.destination_workload, "b");
  }
  await prom.waitFor(`istio_tcp_received_bytes_total{reporter="source",source_principal="${SA_A}"} == 25`);
  await prom.waitFor(`sum(istio_tcp_connections_closed_total{reporter="destination"}) == 5`);
  await prom.waitFor(`sum(istio_tcp_connections_opened_total{reporter="source"}) == 5`);

  const handshakes = await prom.waitFor(`sum by (role) (ambit_tls_handshake_duration_seconds_count) > 0`);
  t.deepEqual(handshakes.map((h) => h.metric.role).sort(), ["client", "server"]);
  await prom.waitFor(`histogram_quantile(0.99, sum by (le) (rate(ambit_tls_handshake_duration_seconds_bucket[1m])))`);
  await prom.waitFor(`ambit_tls_handshakes_total{result="ok"} > 0`);

  await prom.waitFor(`process_cpu_seconds_total > 0`);
  await prom.waitFor(`nodejs_eventloop_lag_seconds`);
  const attributed = await prom.waitFor(`ambit_cpu_attributed_seconds_total`);
  t.deepEqual([...new Set(attributed.map((x) => x.metric.activity))].sort(), ["handshake", "other", "traffic"]);
  await prom.waitFor(`ambit_cpu_seconds_per_handshake`);
  await prom.waitFor(`ambit_cpu_seconds_per_gib`);
  const expiry = await prom.waitFor(`ambit_certificate_expiry_seconds{spiffe_id="${SA_A}"}`);
  t.true(Number(expiry[0]?.value[1]) > 3000 && Number(expiry[0]?.value[1]) <= 3600);
  await prom.waitFor(`ambit_pods_enrolled == 1`);

  // The CLI against the live agent of node 1.
  const admin = mesh.agents[0]?.endpoints.admin as string;
  const tap = await run("node", [CLI, "tap", "--admin", admin]);
  const lines = tap.stdout.trim().split("\n");
  t.is(lines.length, 5, tap.stdout);
  for (const line of lines) {
    t.true(line.startsWith(`end  src=default/a (${SA_A}) dst=default/b ${b.ipv4}:8080 (${SA_B}) tls=true`), line);
    t.regex(line, /sent=5B recv=4\.9KiB duration=\d+ms reporter=source/);
  }
  const alias = await run("node", [CLI, "connections", "--admin", admin]);
  t.is(alias.stdout, tap.stdout);
  const certs = await run("node", [CLI, "certs", "--admin", admin]);
  t.regex(
    certs.stdout,
    new RegExp(`^${SA_A} state=ready expires=\\S+ \\(in (59|60)m\\d+s\\) serial=\\w+ pods=default/a\\n$`),
  );
  const down = await run("node", [CLI, "tap", "--admin", "127.0.0.1:1"]).catch(
    (e: { code: number; stderr: string }) => e,
  );
  t.is((down as { code: number }).code, 1);
  t.regex(
    (down as { stderr: string }).stderr,
    /cannot reach the agent's admin server at 127\.0\.0\.1:1.*admin_unavailable/,
  );
});

test("readiness is 503 with reasons while the CA is unreachable at first start", async (t) => {
  const cluster = await clusterFor(t, {
    nodes: [{ name: "n1", pods: [{ name: "a", labels: meshed, serviceAccount: "sa-a" }] }],
  });
  const dir = mkdtempSync(join(tmpdir(), "ambit-obs-"));
  let running: RunningAgent | undefined;
  t.teardown(async () => {
    if (running) {
      for (const e of running.redirector.enrolled()) running.redirector.unenroll(`${e.pod.namespace}/${e.pod.name}`);
      await running.stop();
    }
    rmSync(dir, { recursive: true, force: true });
  });
  // A real bundle and token, but nothing listens where the CA should be.
  await loadOrCreateCa(join(dir, "ca"), { trustDomain: "cluster.local", leafLifetimeSec: 3600, logger: silentLogger });
  writeFileSync(join(dir, "token"), "not-checked\n");
  const manifests = join(dir, "cluster.json");
  await cluster.writeManifests(manifests);
  // A remote CA instead of the embedded one.
  const { caDir: _, ...local } = localAgentConfig("n1", manifests, "");
  const config: AgentConfig = {
    ...local,
    caUrl: `https://127.0.0.1:${await freePort()}`,
    caBundleFile: join(dir, "ca", "ca.crt"),
    caTokenFile: join(dir, "token"),
  };
  running = await startAgent(config, silentLogger);
  t.is(running.redirector.enrolled().length, 1, "redirection is installed; traffic is refused until a certificate");
  const r = await ready(running.endpoints.ready);
  t.is(r.status, 503);
  t.deepEqual(r.body.reasons, [`pod default/a: no valid certificate for ${SA_A}`]);
  const metrics = await (await fetch(`http://${running.endpoints.metrics}/metrics`)).text();
  t.regex(metrics, /ambit_certificate_failures_total\{reason="ca_unavailable"\} [1-9]/);
  const certs = await run("node", [CLI, "certs", "--admin", running.endpoints.admin]);
  t.regex(
    certs.stdout,
    new RegExp(`^${SA_A} state=pending expires=- \\(no valid certificate\\) serial=- pods=default/a error=`),
  );
});
