import { AmbitError } from "../errors.js";

/** The spec handed to createSimCluster is unusable; nothing was created. */
export class SimSpecError extends AmbitError {
  constructor(message: string) {
    super("SIM_INVALID_SPEC", message);
  }
}

/** One command (ip, sysctl, ...) run on behalf of the simulator failed. */
export class SimCommandError extends AmbitError {
  readonly command: string;
  readonly args: readonly string[];
  readonly stderr: string;
  readonly exitCode: number | null;

  constructor(command: string, args: readonly string[], stderr: string, exitCode: number | null, cause?: unknown) {
    const line = [command, ...args].join(" ");
    const detail = stderr.trim() || (cause instanceof Error ? cause.message : "no output");
    super("SIM_COMMAND_FAILED", `\`${line}\` failed (exit ${exitCode ?? "?"}): ${detail}`, { cause });
    this.command = command;
    this.args = args;
    this.stderr = stderr;
    this.exitCode = exitCode;
  }

  /** The command line as typed in a shell (for messages and logs). */
  get commandLine(): string {
    return [this.command, ...this.args].join(" ");
  }
}

/** Building a simulated cluster failed halfway; everything it had made was removed before this was thrown. */
export class SimCreateError extends AmbitError {
  constructor(message: string, cause: unknown) {
    super("SIM_CREATE_FAILED", message, { cause });
  }
}

/** A helper (exec/spawnIn) was asked to run in a namespace this cluster does not own, or after destroy(). */
export class SimUsageError extends AmbitError {
  constructor(message: string) {
    super("SIM_USAGE", message);
  }
}
