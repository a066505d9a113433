import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test, { type ExecutionContext } from "ava";
import { install, primaryConfig, uninstall } from "../../../agent/cni/install.js";
import { KubeApiServer } from "../../kube-api/server.js";
import { fileUrl, loadedPackage, runProbe } from "../../support/module-probe.js";

/**
 * ambit cni-install / cni-uninstall on temp directories, with any file standing in for the plugin (the built single
 * executable is test/netns/cni-install.test.ts's): which file the entry goes in, a single-plugin .conf, a primary
 * CNI that rewrites its file, waiting for the primary's configuration, --watch, and what the commands load.
 */

const CLI = fileURLToPath(new URL("../../../agent/cli.js", import.meta.url));
const say = { info: () => {}, warn: () => {} };
const PTP = '{"cniVersion":"0.4.0","name":"ptp-net","type":"ptp","ipMasq":true,"ipam":{"type":"host-local"}}\n';
const LIST = '{"cniVersion":"1.0.0","name":"calico","plugins":[{"type":"calico"},{"type":"bandwidth"}]}\n';

function node(t: ExecutionContext) {
  const dir = mkdtempSync(join(tmpdir(), "ambit-cni-inst-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const binDir = join(dir, "bin");
  const confDir = join(dir, "net.d");
  const plugin = join(dir, "plugin");
  writeFileSync(plugin, "#!/bin/sh\necho plugin\n");
  mkdirSync(confDir);
  return { dir, binDir, confDir, plugin, options: { plugin, binDir, confDir, agentSocket: "/s.sock", waitMs: 0, say } };
}

test("the entry goes in the runtime's file: the first *.conflist, *.conf or *.json by name", (t) => {
  const { confDir } = node(t);
  t.is(primaryConfig(confDir), undefined);
  for (const name of ["99-z.conflist", "README", "50-b.json", "10-calico.conflist.bak", "20-a.conf"]) {
    writeFileSync(join(confDir, name), "{}");
  }
  mkdirSync(join(confDir, "05-dir.conf"));
  t.is(primaryConfig(confDir), join(confDir, "20-a.conf"));
});

test("a single-plugin .conf becomes a .conflist of the same name; uninstall gives the .conf back byte for byte", async (t) => {
  const { binDir, confDir, options } = node(t);
  writeFileSync(join(confDir, "10-ptp.conf"), PTP);
  const result = await install(options);
  t.is(result.config, join(confDir, "10-ptp.conflist"));
  t.deepEqual(readdirSync(confDir).sort(), ["10-ptp.conflist", "ambit-cni.d"], "the .conf is gone: one file to read");
  const list = JSON.parse(readFileSync(result.config, "utf8"));
  t.like(list, { cniVersion: "0.4.0", name: "ptp-net" });
  t.deepEqual(
    list.plugins.map((p: { type: string }) => p.type),
    ["ptp", "ambit-cni"],
  );
  const again = await install(options);
  t.deepEqual(again.changed, [], "idempotent");
  uninstall({ binDir, confDir, say });
  t.deepEqual(readdirSync(confDir), ["10-ptp.conf"]);
  t.is(readFileSync(join(confDir, "10-ptp.conf"), "utf8"), PTP);
});

test("a conflist the primary CNI rewrote while ambit-cni was in keeps that rewrite on uninstall", async (t) => {
  const { binDir, confDir, options } = node(t);
  const file = join(confDir, "10-calico.conflist");
  writeFileSync(file, LIST);
  await install(options);
  // Calico's installer restarts with a new setting and writes its list again, keeping what it found after it.
  const rewritten = JSON.parse(readFileSync(file, "utf8"));
  rewritten.plugins[0].mtu = 1440;
  writeFileSync(file, JSON.stringify(rewritten));
  uninstall({ binDir, confDir, say });
  const after = JSON.parse(readFileSync(file, "utf8"));
  t.deepEqual(after.plugins, [{ type: "calico", mtu: 1440 }, { type: "bandwidth" }]);
});

test("install waits for the primary CNI's configuration, and fails with a clear error when none comes", async (t) => {
  const { confDir, options } = node(t);
  const none = await t.throwsAsync(install({ ...options, waitMs: 300 }));
  t.is((none as { code?: string }).code, "cni_config_missing");
  t.regex(none?.message ?? "", /no CNI configuration .* after 0 s/);
  setTimeout(() => writeFileSync(join(confDir, "10-calico.conflist"), LIST), 300);
  const started = Date.now();
  const result = await install({ ...options, waitMs: 5000 });
  t.true(Date.now() - started >= 250, "it waited");
  t.is(result.config, join(confDir, "10-calico.conflist"));
});

/** Polls `ok` every 50 ms; fails the test with `what()` after `ms`. */
async function until(ms: number, ok: () => boolean, what: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(what());
    await new Promise((r) => setTimeout(r, 50));
  }
}

function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => child.once("exit", (code) => resolve(code)));
}

test("cni-install --watch puts the entry back when the primary rewrites its file, and follows the token", async (t) => {
  t.timeout(30_000);
  const { dir, binDir, confDir, plugin } = node(t);
  const file = join(confDir, "10-calico.conflist");
  writeFileSync(file, LIST);
  const api = await KubeApiServer.start();
  t.teardown(() => api.close());
  const child = spawn(
    process.execPath,
    [
      CLI,
      "cni-install",
      "--watch",
      "--interval-seconds=1",
      `--cni-bin-dir=${binDir}`,
      `--cni-conf-dir=${confDir}`,
      `--plugin=${plugin}`,
      `--token-file=${api.tokenFile}`,
      `--ca-file=${api.caFile}`,
      `--kube-server=${api.url}`,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  t.teardown(() => child.kill("SIGKILL"));
  let out = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    out += d;
  });
  const hasEntry = () => {
    try {
      return readFileSync(file, "utf8").includes('"ambit-cni"');
    } catch {
      return false;
    }
  };
  await until(
    10_000,
    () => hasEntry(),
    () => `never installed: ${out}`,
  );

  writeFileSync(file, LIST); // the primary's agent restarted and wrote its own list again
  await until(
    5000,
    () => hasEntry(),
    () => `the entry was not put back: ${out}`,
  );
  const hostToken = join(confDir, "ambit-cni.d", "token");
  await api.rotateToken();
  const rotated = readFileSync(api.tokenFile, "utf8");
  await until(
    5000,
    () => readFileSync(hostToken, "utf8") === rotated,
    () => `token not refreshed: ${out}`,
  );
  rmSync(join(binDir, "ambit-cni"));
  await until(
    5000,
    () => readdirSync(binDir).includes("ambit-cni"),
    () => `binary not put back: ${out}`,
  );

  child.kill("SIGTERM");
  t.is(await exited(child), 0, out);
  t.true(hasEntry(), "stopping the watch (pod deleted, upgrade) uninstalls nothing");
  t.true(readdirSync(dir).length > 0);
});

test("cni-install and cni-uninstall load no native library and no Kubernetes client", async (t) => {
  const { binDir, confDir, plugin } = node(t);
  writeFileSync(join(confDir, "10-calico.conflist"), LIST);
  const args = (command: string, extra: readonly string[]) =>
    JSON.stringify([process.execPath, CLI, command, `--cni-bin-dir=${binDir}`, `--cni-conf-dir=${confDir}`, ...extra]);
  for (const [command, extra] of [
    ["cni-install", [`--plugin=${plugin}`]],
    ["cni-uninstall", []],
  ] as const) {
    const probe = await runProbe(
      `process.argv = ${args(command, extra)}; process.env.AMBIT_LOG_LEVEL = "silent";
       await import(${JSON.stringify(fileUrl("agent/cli.js"))});
       await new Promise((r) => setTimeout(r, 500));
       return true;`,
      { recordModules: true },
    );
    t.true(
      probe.modules.some((u) => u.endsWith("/agent/cni/install.js")),
      `${command} ran`,
    );
    for (const pkg of ["koffi", "@kubernetes/client-node"])
      t.false(loadedPackage(probe.modules, pkg), `${command}: ${pkg}`);
    t.false(
      probe.modules.some((u) => /\/agent\/(dataplane|redirect|netns)\//.test(u)),
      `${command} loads none of the agent's native-backed modules`,
    );
  }
  t.deepEqual(readdirSync(binDir), [], "the probe's install and uninstall both ran");
});
