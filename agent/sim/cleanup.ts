import type { ChildProcess } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { SimSpecError } from "./errors.js";
import { run, runSyncQuiet } from "./run.js";
import { NETNS_DIR } from "./topology.js";

/**
 * Process-wide record of what simulated clusters still own, so a crashed test or a Ctrl-C'd demo leaves nothing
 * behind: on 'exit', SIGINT and SIGTERM the still-live namespaces are deleted synchronously (no event loop is left
 * in an exit handler) and the processes started in them are killed. Hooks are installed only while something is
 * live, so a process without clusters keeps Node's default signal behaviour.
 */

const liveNetns = new Set<string>();
const liveChildren = new Set<ChildProcess>();
let hooksInstalled = false;

const SIGNALS = ["SIGINT", "SIGTERM"] as const;

function onExit(): void {
  cleanupAllSync();
}

function onSignal(signal: NodeJS.Signals): void {
  // Counted before cleanup, which removes our listener.
  const onlyUs = process.listenerCount(signal) === 1;
  cleanupAllSync();
  // Nobody else handles it: with our listener gone, re-raising gives the default action (die of the signal).
  if (onlyUs) process.kill(process.pid, signal);
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on("exit", onExit);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function uninstallHooks(): void {
  if (!hooksInstalled) return;
  hooksInstalled = false;
  process.removeListener("exit", onExit);
  for (const s of SIGNALS) process.removeListener(s, onSignal);
}

function maybeUninstall(): void {
  if (liveNetns.size === 0 && liveChildren.size === 0) uninstallHooks();
}

export function trackNetns(name: string): void {
  liveNetns.add(name);
  installHooks();
}

export function untrackNetns(name: string): void {
  liveNetns.delete(name);
  maybeUninstall();
}

export function trackChild(child: ChildProcess): void {
  liveChildren.add(child);
  installHooks();
  child.once("exit", () => {
    liveChildren.delete(child);
    maybeUninstall();
  });
}

/** Synchronous last-resort cleanup of everything still tracked; never throws. */
export function cleanupAllSync(): void {
  for (const child of liveChildren) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
  liveChildren.clear();
  const names = [...liveNetns].filter(netnsExists);
  if (names.length > 0) {
    // One process for all of them; -force keeps going past namespaces that vanished meanwhile.
    runSyncQuiet("ip", ["-force", "-batch", "-"], `${names.map((n) => `netns del ${n}`).join("\n")}\n`);
  }
  liveNetns.clear();
  uninstallHooks();
}

export function netnsExists(name: string): boolean {
  return existsSync(`${NETNS_DIR}/${name}`);
}

/** Deletes one named network namespace; succeeds if it is already gone. */
export async function deleteNetns(name: string): Promise<void> {
  if (!netnsExists(name)) return;
  try {
    await run("ip", ["netns", "del", name]);
  } catch (err) {
    if (netnsExists(name)) throw err;
  }
}

/** Deletes many namespaces with one `ip -batch`, then retries one by one whatever survived (to report why). */
export async function deleteNetnsMany(names: readonly string[]): Promise<void> {
  const present = names.filter(netnsExists);
  if (present.length === 0) return;
  try {
    await run("ip", ["-force", "-batch", "-"], { input: `${present.map((n) => `netns del ${n}`).join("\n")}\n` });
  } catch {
    // Reported below, per namespace, if anything is actually left.
  }
  for (const name of present) await deleteNetns(name);
}

const STALE_PREFIX_RE = /^[a-z][a-z0-9]{1,9}$/;

/**
 * Removes every network namespace named `<prefix>-...` (left by a process that was killed outright, where no hook
 * could run), after killing the processes still inside them. Returns the deleted names.
 * Only ever touches names with the given prefix; the prefix must look like a simulator prefix.
 */
export async function cleanupStale(prefix: string): Promise<string[]> {
  if (!STALE_PREFIX_RE.test(prefix)) throw new SimSpecError(`refusing to clean up with prefix "${prefix}"`);
  let entries: string[];
  try {
    entries = readdirSync(NETNS_DIR);
  } catch {
    return [];
  }
  const mine = entries.filter((n) => n.startsWith(`${prefix}-`));
  for (const name of mine) {
    try {
      const { stdout } = await run("ip", ["netns", "pids", name]);
      for (const pid of stdout.split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), "SIGKILL");
        } catch {
          // Already gone.
        }
      }
    } catch {
      // Namespace vanished meanwhile.
    }
  }
  await deleteNetnsMany(mine);
  for (const name of mine) liveNetns.delete(name);
  maybeUninstall();
  return mine;
}
