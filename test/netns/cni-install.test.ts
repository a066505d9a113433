import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import { buildPlugin } from "../../agent/cni/build-plugin.js";
import { writeFileAtomic } from "../../agent/sim/index.js";
import { KubeApiServer } from "../kube-api/server.js";
import { runPlugin } from "../support/cni-plugin.js";
import { meshFor } from "./support/agents.js";
import { clusterFor } from "./support/cluster.js";
import { ruleCount } from "./support/nft.js";

/**
 * ambit-cni as a node gets it: the single executable built as `make cni-plugin` builds it, put on the "node" by the
 * real `ambit cni-install` (a fake bin dir, a conf dir holding a bridge conflist), then exec'd from where it was
 * installed the way the runtime execs it, with the configuration the runtime would hand it from that conflist;
 * against a running agent, and with the agent down through the fallback credentials the installer wrote; and
 * `ambit cni-uninstall` leaves the node as it found it.
 */

const CLI = fileURLToPath(new URL("../../agent/cli.js", import.meta.url));
const meshed = { "ambit.dev/mesh": "enabled" };

/** A node's primary network: bridge + host-local, portmap, as containerd's example ships it. */
const BRIDGE = `{
  "cniVersion": "1.0.0",
  "name": "containerd-net",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "promiscMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.88.0.0/16" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
`;
/** Later by name: the runtime does not read it, nor may the installer touch it. */
const LOOPBACK = '{"cniVersion":"1.0.0","name":"lo","type":"loopback"}\n';

function ambit(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { timeout: 20_000, env: { PATH: process.env.PATH ?? "", AMBIT_LOG_LEVEL: "info", ...env } },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
    );
  });
}

/** What the runtime hands ambit-cni from a conflist: the network's name and version, its entry, the result so far. */
function runtimeConfig(conflist: string, prevResult: Record<string, unknown>): Record<string, unknown> {
  const list = JSON.parse(conflist) as { cniVersion: string; name: string; plugins: Record<string, unknown>[] };
  const entry = list.plugins.find((p) => p.type === "ambit-cni");
  if (!entry) throw new Error("no ambit-cni entry");
  return { cniVersion: list.cniVersion, name: list.name, ...entry, prevResult };
}

function resultFor(ip: string): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    interfaces: [{ name: "eth0", mac: "0a:58:0a:58:00:05", sandbox: "/var/run/netns/x" }],
    ips: [{ address: `${ip}/24`, interface: 0, gateway: ip.replace(/\.\d+$/, ".1") }],
    routes: [{ dst: "0.0.0.0/0" }],
  };
}

test("cni-install puts the built plugin on the node; the installed binary enrolls a pod; cni-uninstall restores the node", async (t) => {
  t.timeout(60_000);
  const dir = mkdtempSync(join(tmpdir(), "ambit-cni-install-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const built = await buildPlugin(join(dir, "build"));
  const binDir = join(dir, "opt-cni-bin");
  const confDir = join(dir, "etc-cni-net.d");
  mkdirSync(binDir);
  mkdirSync(confDir);
  writeFileSync(join(binDir, "bridge"), "#!/bin/sh\n", { mode: 0o755 });
  writeFileSync(join(confDir, "10-containerd-net.conflist"), BRIDGE);
  writeFileSync(join(confDir, "99-loopback.conf"), LOOPBACK);

  const cluster = await clusterFor(t, {
    nodes: [{ name: "n1", pods: [{ name: "a", labels: meshed }, { name: "b" }] }],
  });
  const a = cluster.pod("a");
  const b = cluster.pod("b");
  const socket = join("/tmp", `ambit-cni-install-${process.pid}.sock`);
  const api = await KubeApiServer.start();
  t.teardown(() => api.close());
  api.applyAll([
    { apiVersion: "v1", kind: "Namespace", metadata: { name: "default", labels: {} } },
    { apiVersion: "v1", kind: "Pod", metadata: { namespace: "default", name: "a", labels: meshed, uid: "uid-a" } },
    { apiVersion: "v1", kind: "Pod", metadata: { namespace: "default", name: "b", labels: {}, uid: "uid-b" } },
  ]);

  const installArgs = [
    "cni-install",
    `--cni-bin-dir=${binDir}`,
    `--cni-conf-dir=${confDir}`,
    `--plugin=${built.executable}`,
    `--agent-socket=${socket}`,
    `--token-file=${api.tokenFile}`,
    `--ca-file=${api.caFile}`,
    "--wait-seconds=2",
  ];
  const first = await ambit(installArgs, {
    KUBERNETES_SERVICE_HOST: "127.0.0.1",
    KUBERNETES_SERVICE_PORT: String(api.port),
  });
  t.is(first.code, 0, first.out);

  const installed = join(binDir, "ambit-cni");
  t.is(statSync(installed).mode & 0o777, 0o755, "executable");
  t.true(readFileSync(installed).equals(readFileSync(built.executable)), "the built single executable, whole");
  const conflistPath = join(confDir, "10-containerd-net.conflist");
  const conflist = readFileSync(conflistPath, "utf8");
  const list = JSON.parse(conflist);
  const original = JSON.parse(BRIDGE);
  t.deepEqual(list.plugins.slice(0, -1), original.plugins, "the primary's plugins untouched, in their order");
  t.is(list.name, original.name);
  const stateDir = join(confDir, "ambit-cni.d");
  t.deepEqual(list.plugins.at(-1), {
    type: "ambit-cni",
    agentSocket: socket,
    kubernetes: { server: api.url, tokenFile: join(stateDir, "token"), caFile: join(stateDir, "ca.crt") },
  });
  t.is(readFileSync(join(stateDir, "token"), "utf8"), readFileSync(api.tokenFile, "utf8"));
  t.is(readFileSync(join(stateDir, "ca.crt"), "utf8"), readFileSync(api.caFile, "utf8"));
  for (const f of ["token", "ca.crt"]) t.is(statSync(join(stateDir, f)).mode & 0o777, 0o600, `${f} is 0600`);
  t.is(readFileSync(join(confDir, "99-loopback.conf"), "utf8"), LOOPBACK, "a file the runtime does not use is left");

  const inode = statSync(installed).ino;
  const again = await ambit(installArgs, {
    KUBERNETES_SERVICE_HOST: "127.0.0.1",
    KUBERNETES_SERVICE_PORT: String(api.port),
  });
  t.is(again.code, 0, again.out);
  t.is(readFileSync(conflistPath, "utf8"), conflist, "a second install changes no byte");
  t.is(statSync(installed).ino, inode, "nor copies the binary again");
  t.deepEqual(readdirSync(confDir).sort(), ["10-containerd-net.conflist", "99-loopback.conf", "ambit-cni.d"]);

  // The installed binary, exec'd as the runtime does.
  const version = await runPlugin({ command: "VERSION" }, { cniVersion: "1.0.0" }, installed);
  t.is(version.status, 0, version.stdout);
  t.deepEqual(version.json, { cniVersion: "1.0.0", supportedVersions: ["0.4.0", "1.0.0"] });
  const notPod = await runPlugin(
    { command: "ADD", netns: "/proc/self/ns/net" },
    runtimeConfig(conflist, resultFor("10.88.0.9")),
    installed,
  );
  t.is(notPod.status, 0, notPod.stdout);
  t.deepEqual(notPod.json, resultFor("10.88.0.9"), "no K8S_POD_*: prevResult passed through");

  const mesh = await meshFor(t, cluster, { config: { cniSocket: socket } });
  const agent = mesh.agents[0];
  if (!agent || !a || !b) throw new Error("no agent or pods");
  // a as the API has it at ADD: placed, no IPs yet; only the plugin's ADD can enroll it.
  const applied = new Promise((resolve) => agent.source.once("change", resolve));
  await writeFileAtomic(mesh.clusterFile, {
    apiVersion: "v1",
    kind: "List",
    items: (cluster.objects() as { kind?: string; metadata?: Record<string, unknown> }[]).map((o) => {
      if (o.kind !== "Pod" || o.metadata?.name !== "a") return o;
      const { annotations: _, ...metadata } = o.metadata ?? {};
      return { ...o, metadata, status: { phase: "Pending" } };
    }),
  });
  await applied;
  t.is(ruleCount(a.netnsPath), 0);
  const sandbox = { containerId: "sandbox-a", netns: a.netnsPath, pod: { namespace: "default", name: "a" } };
  const added = await runPlugin({ command: "ADD", ...sandbox }, runtimeConfig(conflist, resultFor(a.ipv4)), installed);
  t.is(added.status, 0, added.stdout);
  t.deepEqual(added.json, resultFor(a.ipv4));
  t.true(ruleCount(a.netnsPath) > 0, "the installed plugin had the agent enroll the pod before it returned");
  const deleted = await runPlugin({ command: "DEL", ...sandbox }, runtimeConfig(conflist, {}), installed);
  t.is(deleted.status, 0, deleted.stdout);
  t.is(ruleCount(a.netnsPath), 0, "DEL unenrolled it");

  // Agent down: the fallback reads labels from the API server with the credentials the installer wrote.
  await agent.stop();
  const down = await runPlugin({ command: "ADD", ...sandbox }, runtimeConfig(conflist, resultFor(a.ipv4)), installed);
  t.is(down.status, 1, down.stdout);
  t.like(down.json, { code: 11 });
  t.regex(down.json.msg, /default\/a is meshed/);
  const plain = await runPlugin(
    { command: "ADD", containerId: "sandbox-b", netns: b.netnsPath, pod: { namespace: "default", name: "b" } },
    runtimeConfig(conflist, resultFor(b.ipv4)),
    installed,
  );
  t.is(plain.status, 0, `b is outside the mesh per the API server, read with the installed token: ${plain.stdout}`);

  for (const round of [1, 2]) {
    const removed = await ambit(["cni-uninstall", `--cni-bin-dir=${binDir}`, `--cni-conf-dir=${confDir}`]);
    t.is(removed.code, 0, removed.out);
    t.is(readFileSync(conflistPath, "utf8"), BRIDGE, `uninstall ${round}: the conflist byte for byte as it was`);
    t.deepEqual(readdirSync(confDir).sort(), ["10-containerd-net.conflist", "99-loopback.conf"]);
    t.deepEqual(readdirSync(binDir), ["bridge"], "the binary is gone, the others stay");
  }
  t.is(readFileSync(join(confDir, "99-loopback.conf"), "utf8"), LOOPBACK);
});
