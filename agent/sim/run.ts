import { execFile, execFileSync } from "node:child_process";
import { SimCommandError } from "./errors.js";

export interface RunResult {
  stdout: string;
  stderr: string;
}

/**
 * The environment the sim's commands run in: the system's tool directories come first, so a `node_modules/.bin` on
 * PATH cannot shadow them (npx puts one there, where @vercel/nft, an ava dependency, installs a binary named `nft`).
 */
export function systemToolsEnv(): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `/usr/sbin:/usr/bin:/sbin:/bin:${process.env.PATH ?? ""}` };
}

/** Runs a command without a shell; rejects with SimCommandError (command, args, stderr, exit code, cause). */
export function run(
  command: string,
  args: readonly string[],
  options: { input?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      command,
      args,
      { encoding: "utf8", timeout: options.timeoutMs ?? 30_000, maxBuffer: 16 * 1024 * 1024, env: systemToolsEnv() },
      (error, stdout, stderr) => {
        if (error) {
          const code = typeof error.code === "number" ? error.code : null;
          reject(new SimCommandError(command, args, stderr, code, error));
          return;
        }
        resolve({ stdout, stderr });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** Synchronous variant for exit hooks, where no event loop is left; never throws. */
export function runSyncQuiet(command: string, args: readonly string[], input?: string): boolean {
  try {
    execFileSync(command, args, { stdio: ["pipe", "ignore", "ignore"], input, timeout: 10_000, env: systemToolsEnv() });
    return true;
  } catch {
    return false;
  }
}
