import { rmSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { KubeApiServer } from "../../kube-api/server.js";
import { chainedConfig, runPlugin } from "../../support/cni-plugin.js";

/**
 * The plugin with no agent behind its socket: it lets a pod start only if the API server says the pod is outside
 * the mesh. A real API server (the test one, over TLS with a token) answers; the plugin is the built one.
 */

const nowhere = join(tmpdir(), `ambit-cni-nobody-${process.pid}.sock`);

async function api(t: import("ava").ExecutionContext) {
  const server = await KubeApiServer.start();
  t.teardown(() => server.close());
  const ns = (name: string, labels: Record<string, string>) => ({
    apiVersion: "v1",
    kind: "Namespace",
    metadata: { name, labels },
  });
  const pod = (namespace: string, name: string, labels: Record<string, string> = {}) => ({
    apiVersion: "v1",
    kind: "Pod",
    metadata: { namespace, name, labels, uid: `uid-${name}` },
    spec: { nodeName: "n1", containers: [{ name: "app", image: "app" }] },
  });
  server.applyAll([
    ns("meshed", { "ambit.dev/mesh": "enabled" }),
    ns("plain", {}),
    pod("meshed", "web"),
    pod("meshed", "batch", { "ambit.dev/mesh": "disabled" }),
    pod("plain", "job"),
    pod("plain", "opted-in", { "ambit.dev/mesh": "enabled" }),
  ]);
  return server;
}

function add(namespace: string, name: string, extra: Record<string, unknown>, socket = nowhere) {
  const config = chainedConfig(["10.0.0.5"], { agentSocket: socket, timeoutMs: 3000, ...extra });
  return runPlugin({ command: "ADD", netns: "/proc/self/ns/net", pod: { namespace, name } }, config).then((run) => ({
    run,
    config,
  }));
}

test("agent down: pods the API server says are meshed fail with 'try again later', the others start", async (t) => {
  const server = await api(t);
  const kubernetes = { server: server.url, tokenFile: server.tokenFile, caFile: server.caFile };
  for (const [namespace, name] of [
    ["meshed", "web"],
    ["plain", "opted-in"],
  ] as const) {
    const { run } = await add(namespace, name, { kubernetes });
    t.is(run.status, 1, `${namespace}/${name}`);
    t.like(run.json, { cniVersion: "1.0.0", code: 11 });
    t.regex(run.json.msg, new RegExp(`${namespace}/${name} is meshed`));
  }
  for (const [namespace, name] of [
    ["meshed", "batch"],
    ["plain", "job"],
  ] as const) {
    const { run, config } = await add(namespace, name, { kubernetes });
    t.is(run.status, 0, `${namespace}/${name}: ${run.stdout}`);
    t.deepEqual(run.json, config.prevResult, "prevResult unchanged");
  }
});

test("agent down and no way to read labels: every pod's ADD fails (never a meshed pod started unprotected)", async (t) => {
  const server = await api(t);
  const noApi = await add("plain", "job", {});
  t.like(noApi.run.json, { code: 11 });
  t.regex(noApi.run.json.msg, /no kubernetes access/);
  const badToken = join(server.dir, "wrong-token");
  await import("node:fs/promises").then((fs) => fs.writeFile(badToken, "nope"));
  const refused = await add("plain", "job", {
    kubernetes: { server: server.url, tokenFile: badToken, caFile: server.caFile },
  });
  t.is(refused.run.status, 1);
  t.like(refused.run.json, { code: 11 });
  t.regex(refused.run.json.details, /401/);
});

test("an agent that accepts and never answers counts as down: the plugin does not hang past its deadline", async (t) => {
  const server = await api(t);
  const path = join(tmpdir(), `ambit-cni-mute-${process.pid}.sock`);
  rmSync(path, { force: true });
  const held = new Set<Socket>();
  const mute = createServer((s) => held.add(s)).listen(path);
  t.teardown(() => {
    for (const s of held) s.destroy();
    mute.close();
  });
  const kubernetes = { server: server.url, tokenFile: server.tokenFile, caFile: server.caFile };
  const { run } = await add("plain", "job", { kubernetes, timeoutMs: 1000 }, path);
  t.is(run.status, 0, run.stdout);
  t.true(run.ms < 3000, `took ${run.ms} ms`);
  const meshed = await add("meshed", "web", { kubernetes, timeoutMs: 1000 }, path);
  t.like(meshed.run.json, { code: 11 });
  t.regex(meshed.run.json.msg, /no answer within 600 ms/);
});
