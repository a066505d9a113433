import { spawn } from "node:child_process";
import { once } from "node:events";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import { Registry } from "prom-client";
import type { KubeApiError } from "../../../../agent/kube/api/errors.js";
import { registerKubeWatchMetrics } from "../../../../agent/kube/api/watch-metrics.js";
import { agentWatchedResources, caWatchedResources } from "../../../../agent/kube/api/watched-resource.js";
import { kubeconfigYaml } from "../../../kube-api/credentials.js";
import { namespace, peerAuthentication, pod, service } from "../../../kube-api/objects.js";
import { apiServer, source, until } from "./support.js";

/** KubeApiSource: start-up (and when it gives up waiting), health, metrics, close. */

test("the agent's resources, all at once: every path is right and each lands under its store name", async (t) => {
  const api = await apiServer(t);
  api.applyAll([
    namespace("shop", { "ambit.dev/mesh": "enabled" }),
    pod({ name: "web-1", namespace: "shop", nodeName: "node-a" }),
    pod({ name: "db-1", namespace: "shop", nodeName: "node-b" }),
    service({ name: "web", namespace: "shop" }),
    peerAuthentication({ name: "default", namespace: "shop", mode: "STRICT" }),
  ]);
  const { source: s, sink } = await source(t, api, { resources: agentWatchedResources("node-a") });
  await s.start();
  t.deepEqual(sink.keys("pods"), ["shop/db-1", "shop/web-1"]);
  t.deepEqual(sink.keys("nodePods"), ["shop/web-1"]);
  t.deepEqual(sink.keys("namespaces"), ["shop"]);
  t.deepEqual(sink.keys("services"), ["shop/web"]);
  t.deepEqual(sink.keys("endpointSlices"), []);
  t.deepEqual(sink.keys("peerAuthentications"), ["shop/default"]);
  t.deepEqual(sink.keys("authorizationPolicies"), []);
  t.true(s.status().every((st) => st.listed && !st.absent));
  await until(() => s.status().every((st) => st.watching), "7 watches open");
  t.deepEqual(s.health(), { ok: true, reasons: [] });
  t.deepEqual(
    caWatchedResources().map((r) => r.resource),
    ["pods"],
  );
});

test("API server unreachable at start: start() rejects (not_synced, saying why), the source keeps trying, nothing reaches the sink until it lists", async (t) => {
  const api = await apiServer(t);
  api.apply(pod({ name: "a" }));
  const kubeconfig = await api.writeKubeconfig();
  await api.stop();
  const { KubeApiConfig } = await import("../../../../agent/kube/api/config.js");
  const { source: s, sink } = await source(t, api, {
    config: await KubeApiConfig.fromKubeconfig(kubeconfig),
    startTimeoutMs: 400,
  });
  const err = await t.throwsAsync<KubeApiError>(s.start());
  t.is(err?.code, "not_synced");
  t.regex(err?.message ?? "", /within 0.4 s \(still trying\): pods: not listed yet after \d+ s: connect ECONNREFUSED/);
  t.deepEqual(sink.calls, [], "the sink is never told 'nothing' because the server is away");
  t.false(s.health().ok);
  await api.start();
  await s.synced;
  t.deepEqual(sink.log("pods"), ["replace default/a"]);
  await until(() => s.health().ok, "healthy once listed and watching");
});

test("close() during start(): start rejects with closed; nothing is delivered afterwards", async (t) => {
  const api = await apiServer(t);
  await api.stop();
  const { source: s, sink } = await source(t, api);
  const starting = s.start();
  await s.close();
  const err = await t.throwsAsync<KubeApiError>(starting);
  t.is(err?.code, "closed");
  await api.start();
  api.apply(pod({ name: "a" }));
  await new Promise((r) => setTimeout(r, 200));
  t.deepEqual(sink.calls, []);
  t.is(api.requestCount("list"), 0);
});

test("metrics: restarts by reason (every series from zero), relists, synced, age of the newest event", async (t) => {
  const api = await apiServer(t, { bookmarkIntervalMs: 100 });
  const registry = new Registry();
  const observer = registerKubeWatchMetrics(registry);
  const { source: s } = await source(t, api, { observer });
  await s.start();
  await api.waitForWatches(1, "pods");
  await api.stop();
  api.apply(pod({ name: "a" }));
  await api.restart({ compact: true }); // the watch's resourceVersion is gone: 410, relist
  await until(() => s.status()[0]?.relists === 1, "one relist");
  const text = await registry.metrics();
  t.regex(text, /ambit_kube_relists_total\{resource="pods"\} 1\n/);
  t.regex(text, /ambit_kube_watch_restarts_total\{resource="pods",reason="expired"\} 1\n/);
  t.regex(text, /ambit_kube_watch_restarts_total\{resource="pods",reason="stalled"\} 0\n/, "series start at 0");
  t.regex(text, /ambit_kube_watch_restarts_total\{resource="pods",reason="error"\} [1-9]/);
  t.regex(text, /ambit_kube_watch_synced\{resource="pods"\} 1\n/);
  const age = Number(/ambit_kube_newest_event_age_seconds\{resource="pods"\} ([\d.e-]+)\n/.exec(text)?.[1]);
  t.true(age >= 0 && age < 5, `age ${age}`);
});

test("close() leaves the process free to exit: open watches, a stalled watch, a source in backoff", async (t) => {
  // The API server stays up in this process (stalled, with the child's connections open), so nothing but the
  // child's own close() can release what the child holds.
  const api = await apiServer(t, { bookmarkIntervalMs: 50 });
  t.teardown(() => api.resumeWatches());
  api.apply(pod({ name: "a", nodeName: "node-a" }));
  const kubeconfig = await api.writeKubeconfig();
  const dead = join(api.dir, "dead");
  await writeFile(dead, kubeconfigYaml({ server: "https://127.0.0.1:1", caPem: api.caPem, user: { token: "t" } }));
  const root = fileURLToPath(new URL("../../../../", import.meta.url));
  const script = `
    const { KubeApiConfig } = await import(${JSON.stringify(`${root}agent/kube/api/config.js`)});
    const { KubeApiSource } = await import(${JSON.stringify(`${root}agent/kube/api/kube-api-source.js`)});
    const { agentWatchedResources } = await import(${JSON.stringify(`${root}agent/kube/api/watched-resource.js`)});
    const [kubeconfig, deadConfig] = process.argv.slice(1);
    const sink = { upsert() {}, remove() {}, replace() {} };
    // Default timings (stall 2 min, request timeout 10 s): anything left behind keeps the process up far longer
    // than the bound.
    const live = new KubeApiSource({
      config: await KubeApiConfig.fromKubeconfig(kubeconfig),
      resources: agentWatchedResources("node-a"),
      sink,
    });
    await live.start();
    const dead = new KubeApiSource({
      config: await KubeApiConfig.fromKubeconfig(deadConfig),
      resources: [{ resource: "pods", paths: ["/api/v1/pods"] }],
      sink,
      startTimeoutMs: 300,
      timing: { backoff: { baseMs: 60_000, capMs: 60_000 } },
      random: () => 0.99, // every backoff sleep is ~59 s
    });
    await dead.start().catch((err) => console.log("dead:", err.code));
    console.log("synced");
    await new Promise((r) => process.stdin.once("data", r)); // the parent has stalled and dropped the watches
    process.stdin.destroy();
    await new Promise((r) => setTimeout(r, 200)); // re-watches are now waiting for headers that never come
    console.log("closing");
    await Promise.all([live.close(), dead.close()]);
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script, kubeconfig, dead], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let out = "";
  let closingAt = 0;
  child.stdout.on("data", (d) => {
    out += d;
    if (/^synced$/m.test(out) && !/stalled/.test(out)) {
      out += "stalled\n";
      api.stallWatches();
      api.dropWatches();
      child.stdin.end("go\n");
    }
    if (/closing/.test(String(d))) closingAt = Date.now();
  });
  child.stderr.on("data", (d) => {
    out += d;
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const [code, signal] = await once(child, "exit");
  clearTimeout(timer);
  t.is(signal, null, `the process had to be killed: ${out}`);
  t.is(code, 0, out);
  t.regex(out, /dead: not_synced/);
  t.true(closingAt > 0, out);
  const exitMs = Date.now() - closingAt;
  // Without close() releasing everything: a backoff sleep of ~59 s, a stalled watch's 10 s header timeout.
  t.true(exitMs < 5000, `exited ${exitMs} ms after closing`);
});
