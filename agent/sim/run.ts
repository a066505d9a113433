import { execFile, execFileSync } from "node:child_process";
import { SimCommandError } from "./errors.js";

export interface RunResult {
  stdout: string;
  stderr: string;
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
      { encoding: "utf8", timeout: options.timeoutMs ?? 30_000, maxBuffer: 16 * 1024 * 1024 },
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
    execFileSync(command, args, { stdio: ["pipe", "ignore", "ignore"], input, timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}
