/**
 * Build time only (`make cni-plugin`, the image's build stage): ambit-cni as a Node single executable application,
 * one file that `ambit cni-install` copies to the node's CNI bin dir and that runs on a host without Node.js. It is
 * this Node binary (process.execPath) with the plugin's one-file CommonJS bundle (agent/cni/bundle.ts) injected by
 * postject; the binary needs the host's glibc (2.28 or newer) and libstdc++, like the node binary it is.
 *
 * Why a single executable rather than a /bin/sh launcher running a copied node binary on the bundle: one file to
 * install and remove, no host directory of our own, no shell needed on the host, and the fastest start measured
 * (node dist/test/bench/cni-start.js 200, pass-through ADD, interleaved, 2 shared cores at load 4-5): `node -e 0`
 * p50 40.7 ms; this executable p50 42.3, p99 76.8; node on the bundle p50 46.7; the launcher p50 47.7; node on the
 * six ES modules p50 52.5 (p99 of all 77-88, load-bound). ADD of a meshed pod against a running agent (node
 * dist/test/bench/cni-add.js 100 dist/cni/ambit-cni): p50 49.7, p99 84.8 ms (the ES modules: 59.7 / 87.8); a pod
 * outside the mesh p50 33.5, p99 56.5. V8's code cache in the blob (useCodeCache) changed nothing measurable for a
 * 22 KB script, so it is left out. The cost: the image carries a second node binary (+99 MB).
 *
 * Run: node dist/agent/cni/build-plugin.js OUT_DIR   (writes OUT_DIR/ambit-cni and OUT_DIR/ambit-cni.js)
 */

import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { AmbitError } from "../errors.js";
import { bundleCommonJs } from "./bundle.js";

/** The marker node's SEA loader looks for; postject flips it once the blob is in. */
const SEA_FUSE = "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2";
const PLUGIN_MODULE = fileURLToPath(new URL("./plugin.js", import.meta.url));

export interface BuiltPlugin {
  /** The single executable. */
  executable: string;
  /** The bundle it embeds (kept for inspection and for `node ambit-cni.js`). */
  script: string;
}

export async function buildPlugin(outDir: string): Promise<BuiltPlugin> {
  const dir = resolve(outDir);
  mkdirSync(dir, { recursive: true });
  const script = join(dir, "ambit-cni.js");
  writeFileSync(script, bundleCommonJs(PLUGIN_MODULE));

  const blob = join(dir, "ambit-cni.blob");
  const seaConfig = join(dir, "ambit-cni.sea.json");
  writeFileSync(seaConfig, JSON.stringify({ main: script, output: blob, disableExperimentalSEAWarning: true }));
  const prepared = spawnSync(process.execPath, ["--experimental-sea-config", seaConfig], {
    encoding: "utf8",
    timeout: 60_000,
  });
  if (prepared.status !== 0) {
    throw new AmbitError(
      "sea_blob_failed",
      `node --experimental-sea-config failed (${prepared.status ?? prepared.signal}): ${prepared.stderr}`,
    );
  }

  const node = readFileSync(process.execPath);
  if (!node.includes(`${SEA_FUSE}:0`)) {
    throw new AmbitError(
      "sea_unsupported",
      `${process.execPath} has no single-executable fuse (${SEA_FUSE}): build with an official Node 20+ binary`,
    );
  }
  const executable = join(dir, "ambit-cni");
  const temp = `${executable}.${process.pid}.tmp`;
  try {
    copyFileSync(process.execPath, temp);
    // A dev dependency: imported here, so that importing this module (tests) does not need it until a build.
    const { inject } = await import("postject");
    await inject(temp, "NODE_SEA_BLOB", readFileSync(blob), { sentinelFuse: SEA_FUSE });
    chmodSync(temp, 0o755);
    smokeTest(temp);
    renameSync(temp, executable);
  } finally {
    rmSync(temp, { force: true });
    rmSync(blob, { force: true });
    rmSync(seaConfig, { force: true });
  }
  return { executable, script };
}

/** The executable answers VERSION as a runtime asks it, or the build fails here rather than on a node. */
function smokeTest(file: string): void {
  const run = spawnSync(file, [], {
    input: '{"cniVersion":"1.0.0"}',
    env: { CNI_COMMAND: "VERSION" },
    encoding: "utf8",
    timeout: 10_000,
  });
  let ok = false;
  try {
    ok =
      run.status === 0 && (JSON.parse(run.stdout) as { supportedVersions?: unknown }).supportedVersions !== undefined;
  } catch {
    ok = false;
  }
  if (!ok) {
    throw new AmbitError(
      "sea_smoke_failed",
      `the built ambit-cni did not answer VERSION (exit ${run.status ?? run.signal}): ${run.stdout}${run.stderr}`,
    );
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const outDir = process.argv[2];
  if (!outDir) {
    process.stderr.write("usage: node dist/agent/cni/build-plugin.js OUT_DIR\n");
    process.exit(2);
  }
  const built = await buildPlugin(outDir);
  process.stdout.write(`built ${built.executable} (single executable) and ${built.script}\n`);
}
