import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * Runs a snippet of ES module code in a fresh `node` and reports what it cost and, on request, which modules it
 * loaded: whether a path (the agent's kube configuration, say) pulls in a dependency, and how much memory it holds.
 *
 * Loaded modules are recorded with a resolve hook (node:module register, module-probe-hooks.ts) writing each
 * resolved URL to a file. That sees every ESM import, static or dynamic, at any depth; `require.cache` would see
 * only CommonJS, and process.moduleLoadList only Node's own built-ins. The hooks run on a thread of their own,
 * which costs memory, so a probe that measures RSS runs without them (`recordModules: false`).
 */

export interface ProbeResult {
  /** process.memoryUsage().rss at the end of the snippet, in bytes. */
  rssBytes: number;
  /** Peak resident set (resourceUsage maxRSS), in bytes. */
  maxRssBytes: number;
  /** User + system CPU the whole child used up to the end of the snippet, in seconds. */
  cpuSeconds: number;
  /** What the snippet returned (JSON). */
  result: unknown;
  /** Every URL resolved (recordModules only; otherwise empty). */
  modules: string[];
}

const HOOKS = new URL("./module-probe-hooks.js", import.meta.url).href;

/**
 * `body` is the inside of an async function: it may `await` and `import()`, and what it returns is the result.
 * Relative imports are not available (the snippet has no file); pass absolute file URLs (see `fileUrl`).
 */
export async function runProbe(
  body: string,
  options: { recordModules?: boolean; timeoutMs?: number } = {},
): Promise<ProbeResult> {
  const dir = await mkdtemp(join(tmpdir(), "ambit-module-probe-"));
  try {
    const logFile = join(dir, "resolved");
    const script = [
      // A sentinel every recording must contain: without it, a missing log would read as "loaded nothing".
      options.recordModules ? 'await import("node:os");' : "",
      `const result = await (async () => {\n${body}\n})();`,
      "const usage = process.resourceUsage();",
      "process.stdout.write(JSON.stringify({ rssBytes: process.memoryUsage().rss, maxRssBytes: usage.maxRSS * 1024,",
      "  cpuSeconds: (usage.userCPUTime + usage.systemCPUTime) / 1e6, result }));",
    ].join("\n");
    const register =
      `data:text/javascript,import { register } from "node:module";` +
      `register(${JSON.stringify(HOOKS)}, { data: { logFile: ${JSON.stringify(logFile)} } });`;
    const args = [...(options.recordModules ? ["--import", register] : []), "--input-type=module", "-e", script];
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, args, { timeout: options.timeoutMs ?? 30_000 }, (err, out, errOut) => {
        if (err) reject(new Error(`probe failed: ${err.message}\n${errOut}`, { cause: err }));
        else resolve(out);
      });
    });
    const parsed = JSON.parse(stdout) as Omit<ProbeResult, "modules">;
    const modules = options.recordModules ? (await readFile(logFile, "utf8")).split("\n").filter(Boolean) : [];
    if (options.recordModules && !modules.includes("node:os")) throw new Error("probe: module recording did not work");
    return { ...parsed, modules };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A compiled module of this repository (a path relative to dist/) as a URL a probe can import. */
export function fileUrl(pathInDist: string): string {
  return new URL(`../../${pathInDist}`, import.meta.url).href;
}

/** Whether any resolved URL lies inside the npm package `name`. */
export function loadedPackage(modules: readonly string[], name: string): boolean {
  return modules.some((url) => url.includes(`/node_modules/${name}/`));
}
