/**
 * Module customization hooks (node:module register) for module-probe.ts: every URL the child resolves, appended
 * to a file before the resolution is handed back. The append is synchronous and happens before the importing
 * module gets its answer, so once an import has completed its URL is in the file: nothing depends on the timing
 * of messages between the hooks thread and the main thread.
 */
import { appendFileSync } from "node:fs";

let logFile: string | undefined;

export function initialize(data: { logFile: string }): void {
  logFile = data.logFile;
}

type Resolved = { url: string };

export async function resolve(
  specifier: string,
  context: unknown,
  nextResolve: (specifier: string, context: unknown) => Promise<Resolved>,
): Promise<Resolved> {
  const resolved = await nextResolve(specifier, context);
  if (logFile) appendFileSync(logFile, `${resolved.url}\n`);
  return resolved;
}
