/**
 * How fast ambit-cni starts, packaged each way it could be (agent/cni/build-plugin.ts picked the single
 * executable from these figures): a call that needs no agent (ADD for a non-pod, which parses the configuration
 * and passes prevResult through), interleaved so that every form sees the same machine load. Prints p50/p99.
 * Run: node dist/test/bench/cni-start.js [runs]   (default 200; builds into a temp dir, ~5 s)
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildPlugin } from "../../agent/cni/build-plugin.js";

const runs = Number(process.argv[2] ?? 200);
const dir = mkdtempSync(join(tmpdir(), "ambit-cni-start-"));
try {
  const built = await buildPlugin(dir);
  const launcher = join(dir, "ambit-cni.sh");
  writeFileSync(launcher, `#!/bin/sh\nexec ${process.execPath} ${built.script} "$@"\n`, { mode: 0o755 });
  const forms: Record<string, [string, string[]]> = {
    "node -e 0 (for scale)": [process.execPath, ["-e", "0"]],
    "single executable (shipped)": [built.executable, []],
    "node on the one-file bundle": [process.execPath, [built.script]],
    "/bin/sh launcher + node + bundle": [launcher, []],
    "node on the compiled ES modules": [
      process.execPath,
      [fileURLToPath(new URL("../../agent/cni/plugin.js", import.meta.url))],
    ],
  };
  const input = JSON.stringify({
    cniVersion: "1.0.0",
    name: "k8s-pod-network",
    type: "ambit-cni",
    prevResult: { cniVersion: "1.0.0", ips: [{ address: "10.0.0.5/24" }] },
  });
  const env = { CNI_COMMAND: "ADD", CNI_CONTAINERID: "c", CNI_IFNAME: "eth0", CNI_NETNS: "/proc/self/ns/net" };
  const times = new Map(Object.keys(forms).map((k) => [k, [] as number[]]));
  for (let i = 0; i < runs; i++) {
    for (const [what, [file, args]] of Object.entries(forms)) {
      const t0 = process.hrtime.bigint();
      const run = spawnSync(file, args, { input, env, timeout: 10_000 });
      times.get(what)?.push(Number(process.hrtime.bigint() - t0) / 1e6);
      if (!what.startsWith("node -e") && (run.status !== 0 || !String(run.stdout).includes("10.0.0.5"))) {
        throw new Error(`${what}: exit ${run.status}: ${run.stdout}${run.stderr}`);
      }
    }
  }
  const pct = (xs: number[], p: number) =>
    [...xs].sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor(xs.length * p))]?.toFixed(1);
  for (const [what, xs] of times) {
    console.log(`${what.padEnd(36)} p50 ${pct(xs, 0.5)} ms, p99 ${pct(xs, 0.99)} ms (${xs.length} runs)`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
