/**
 * Installing ambit-cni on a node and taking it off again: `ambit cni-install` (the DaemonSet's init container) and
 * `ambit cni-uninstall`. It imports only node:*, the pure conflist edit and a name comparator: no native library,
 * no Kubernetes client.
 *
 * The paths given are the host's paths as the container sees them: the manifest mounts /opt/cni/bin and
 * /etc/cni/net.d at the same paths, so what is written into the configuration (the credentials' paths) is right for
 * the plugin, which runs on the host.
 *
 * Every file is written whole beside its destination and renamed over it, so the runtime never reads half a
 * configuration nor execs half a binary. Install order: the binary, the credentials, then the configuration entry
 * that makes the runtime call it; uninstall goes the other way.
 */

import {
  chmodSync,
  closeSync,
  copyFileSync,
  fchmodSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  watch as watchDir,
  writeFileSync,
} from "node:fs";
import { basename, dirname, extname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isDeepStrictEqual } from "node:util";
import { AmbitError } from "../errors.js";
import { compareNames } from "../kube/records.js";
import { hasPlugin, installPlugin, PLUGIN_TYPE, removePlugin } from "./conflist.js";

/** What the runtime reads from a CNI configuration directory (libcni, as containerd and CRI-O use it). */
const CONFIG_EXTENSIONS = new Set([".conflist", ".conf", ".json"]);
const STATE_DIR = "ambit-cni.d";
/** A configuration or a token is small; a bigger file is not one. */
const MAX_CONFIG_BYTES = 1024 * 1024;

export class CniInstallError extends AmbitError {}

export interface Say {
  info(fields: object, msg: string): void;
  warn(fields: object, msg: string): void;
}

export interface InstallOptions {
  /** The plugin executable to copy (the image's single executable). */
  plugin: string;
  binDir: string;
  confDir: string;
  /**
   * ambit-cni's own files on the node (default <confDir>/ambit-cni.d, which the runtime does not read): the token
   * and CA of the agent-down fallback, and each configuration as it was before ambit-cni went in.
   */
  stateDir?: string;
  /** The agent's socket, written into the entry. */
  agentSocket: string;
  /**
   * The API server for the plugin's agent-down fallback, and this pod's token and CA to copy for it. Without it the
   * plugin fails every pod's ADD while the agent is down (it cannot tell meshed pods from others).
   */
  kubernetes?: { server: string; tokenFile: string; caFile: string };
  /** How long to wait for the node's primary CNI to write its configuration (0: not at all). */
  waitMs: number;
  say: Say;
}

export interface InstallResult {
  /** The configuration file ambit-cni is in. */
  config: string;
  binary: string;
  /** What this run changed (empty when everything was in place already). */
  changed: string[];
}

function stateDirOf(o: { confDir: string; stateDir?: string }): string {
  return o.stateDir ?? join(o.confDir, STATE_DIR);
}

/** The CNI configuration files in confDir (*.conflist, *.conf, *.json), in the order libcni reads them. */
function configNames(confDir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(confDir, { withFileTypes: true })
      .filter((e) => (e.isFile() || e.isSymbolicLink()) && CONFIG_EXTENSIONS.has(extname(e.name)))
      .map((e) => e.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  // libcni sorts by byte order; so does this for the ASCII names configurations have.
  return names.sort(compareNames);
}

/** The configuration file the runtime uses: the first of configNames. */
export function primaryConfig(confDir: string): string | undefined {
  const [first] = configNames(confDir);
  return first === undefined ? undefined : join(confDir, first);
}

export async function install(o: InstallOptions): Promise<InstallResult> {
  const changed: string[] = [];
  const binary = join(o.binDir, PLUGIN_TYPE);
  if (installBinary(o.plugin, binary)) changed.push(binary);

  const entry = entryWithCredentials(o, changed);
  const primary = await waitForPrimary(o.confDir, o.waitMs, o.say);
  const config = insertInto(primary, entry, stateDirOf(o));
  if (config.changed) changed.push(config.file);
  return { config: config.file, binary, changed };
}

/**
 * ambit-cni's entry in the configuration (installPlugin sets its type); with kubernetes, the token and CA are
 * brought up to date first (refreshCredentials) and the files written are added to `changed`.
 */
function entryWithCredentials(o: InstallOptions, changed: string[]): Record<string, unknown> {
  const entry: Record<string, unknown> = { agentSocket: o.agentSocket };
  if (o.kubernetes) {
    const dir = stateDirOf(o);
    changed.push(...refreshCredentials(o.kubernetes, dir));
    entry.kubernetes = { server: o.kubernetes.server, tokenFile: join(dir, "token"), caFile: join(dir, "ca.crt") };
  }
  return entry;
}

/**
 * The token and CA copied where the plugin reads them, when they differ from what is there (a rotated token).
 * Returns the files written.
 */
function refreshCredentials(source: { tokenFile: string; caFile: string }, dir: string): string[] {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const written: string[] = [];
  for (const [from, name] of [
    [source.tokenFile, "token"],
    [source.caFile, "ca.crt"],
  ] as const) {
    const to = join(dir, name);
    const data = readSmall(from);
    if (readIfExists(to)?.equals(data)) continue;
    writeAtomic(to, data, 0o600);
    written.push(to);
  }
  return written;
}

/**
 * ambit-cni's entry put last in `file`. A .conf or .json holds one plugin, and the runtime reads it as one, so the
 * list is written as a .conflist of the same name and the single-plugin file removed (istio-cni does the same).
 * The file as it was before is kept in `stateDir`, so that uninstall can put it back byte for byte.
 */
function insertInto(
  file: string,
  entry: Record<string, unknown>,
  stateDir: string,
): { file: string; changed: boolean } {
  const text = readSmall(file).toString("utf8");
  const next = wrapConflistError(file, () => installPlugin(text, entry));
  const target = extname(file) === ".conflist" ? file : `${file.slice(0, -extname(file).length)}.conflist`;
  if (target === file && next === text) return { file, changed: false };
  if (target !== file && readIfExists(target) !== undefined) {
    throw new CniInstallError(
      "cni_config_conflict",
      `${file} holds one plugin and ${target} exists too: not overwriting it; remove one of them`,
    );
  }
  // Only a file without ambit-cni is an original; one with it is this installer's own output.
  if (!hasPlugin(text)) {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const saved: SavedOriginal = { name: basename(file), text };
    writeAtomic(originalFile(stateDir, target), Buffer.from(JSON.stringify(saved)), 0o600);
  }
  writeAtomic(target, Buffer.from(next), statSync(file).mode & 0o777);
  if (target !== file) unlinkSync(file);
  return { file: target, changed: true };
}

/** A configuration as the primary CNI wrote it, before ambit-cni went in (`name` is its file's). */
interface SavedOriginal {
  name: string;
  text: string;
}

function originalFile(stateDir: string, target: string): string {
  return join(stateDir, `original.${basename(target)}.json`);
}

/**
 * `file`'s text without ambit-cni, and the name to write it under: the original's exact bytes and name when the
 * file is the installer's output from it (the same JSON once ambit-cni is out); else the entry removed in place,
 * because someone (the primary CNI's agent) rewrote the file since, and that rewrite is kept.
 */
function withoutPlugin(file: string, text: string, stateDir: string): { name: string; text: string } {
  const removed = removePlugin(text);
  const saved = readIfExists(originalFile(stateDir, file));
  if (saved !== undefined && removed !== text) {
    try {
      const original = JSON.parse(saved.toString("utf8")) as SavedOriginal;
      const canonical = removePlugin(installPlugin(original.text, { type: PLUGIN_TYPE }));
      if (
        typeof original.name === "string" &&
        typeof original.text === "string" &&
        basename(original.name) === original.name &&
        isDeepStrictEqual(JSON.parse(canonical), JSON.parse(removed))
      ) {
        return { name: original.name, text: original.text };
      }
    } catch {
      // A damaged record: fall through to removing the entry in place.
    }
  }
  return { name: basename(file), text: removed };
}

export interface UninstallResult {
  /** The configuration files ambit-cni was taken out of. */
  configs: string[];
  removed: string[];
}

/** Takes ambit-cni out of every configuration in confDir, then removes its binary and credentials. Idempotent. */
export function uninstall(o: { binDir: string; confDir: string; stateDir?: string; say: Say }): UninstallResult {
  const configs: string[] = [];
  for (const name of configNames(o.confDir)) {
    const file = join(o.confDir, name);
    const text = readSmall(file).toString("utf8");
    let next: { name: string; text: string };
    try {
      next = withoutPlugin(file, text, stateDirOf(o));
    } catch (err) {
      // Not ours to judge: the runtime will complain about it; ambit-cni cannot be in a file that does not parse.
      o.say.warn({ file, err: (err as Error).message }, "skipped a CNI configuration that is not JSON");
      continue;
    }
    if (next.text === text) continue;
    const target = join(o.confDir, next.name);
    writeAtomic(target, Buffer.from(next.text), statSync(file).mode & 0o777);
    if (target !== file) unlinkSync(file);
    configs.push(target);
  }
  const removed: string[] = [];
  for (const path of [join(o.binDir, PLUGIN_TYPE), stateDirOf(o)]) {
    if (readIfExistsStat(path)) {
      rmSync(path, { recursive: true, force: true });
      removed.push(path);
    }
  }
  return { configs, removed };
}

export interface WatchOptions extends InstallOptions {
  /** How often the configuration entry and the credentials are checked (the directory is also watched). */
  intervalMs: number;
  signal: AbortSignal;
}

/**
 * `cni-install --watch`, the DaemonSet's restartable init container, keeps two things true for the life of the pod:
 * - The entry is in the runtime's configuration. A primary CNI's agent rewrites its file when it restarts (Cilium,
 *   Calico do), which drops ambit-cni from the chain: new pods would start unenrolled until the agent's API/proc
 *   path caught them. The entry is put back only when it is missing, never because it differs, so the old and the
 *   new pod of a rolling upgrade (both running for a while) do not overwrite each other's entry in turn.
 * - The token is the pod's current one. The kubelet rotates the projected token (it expires; and a bound token
 *   stops working when its pod is deleted, at the end of every upgrade), so a copy taken once would leave the
 *   agent-down fallback with a dead token: every pod's ADD would then fail while the agent is down.
 * The binary is put back only if removed (the new pod of an upgrade copies its own). On `signal` it returns and
 * leaves everything installed: a pod's deletion is not an uninstall (that is `ambit cni-uninstall`).
 */
export async function watch(o: WatchOptions): Promise<void> {
  let wake: (() => void) | undefined;
  let watcher: ReturnType<typeof watchDir> | undefined;
  const arm = () => {
    if (watcher) return;
    try {
      watcher = watchDir(o.confDir, () => wake?.());
      watcher.on("error", () => {
        watcher?.close();
        watcher = undefined;
      });
    } catch {
      watcher = undefined; // the directory is not there yet; the timer covers it
    }
  };
  const stop = () => wake?.();
  o.signal.addEventListener("abort", stop);
  try {
    while (!o.signal.aborted) {
      arm();
      try {
        const fixed = check(o);
        if (fixed.length) o.say.info({ fixed }, "ambit-cni: put back what was missing or stale");
      } catch (err) {
        o.say.warn(
          { err: (err as Error).message, code: (err as AmbitError).code },
          "ambit-cni check failed; retrying at the next change or interval",
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, o.intervalMs);
        wake = () => {
          clearTimeout(timer);
          // A burst of events (a rename writes several) is one check, a little later.
          setTimeout(resolve, 200);
        };
      });
      wake = undefined;
    }
  } finally {
    o.signal.removeEventListener("abort", stop);
    watcher?.close();
  }
}

function check(o: InstallOptions): string[] {
  const fixed: string[] = [];
  const binary = join(o.binDir, PLUGIN_TYPE);
  if (!readIfExistsStat(binary) && installBinary(o.plugin, binary)) fixed.push(binary);
  const entry = entryWithCredentials(o, fixed);
  const primary = primaryConfig(o.confDir);
  if (primary && !wrapConflistError(primary, () => hasPlugin(readSmall(primary).toString("utf8")))) {
    fixed.push(insertInto(primary, entry, stateDirOf(o)).file);
  }
  return fixed;
}

async function waitForPrimary(confDir: string, waitMs: number, say: Say): Promise<string> {
  const deadline = Date.now() + waitMs;
  let told = false;
  for (;;) {
    const found = primaryConfig(confDir);
    if (found) return found;
    if (Date.now() >= deadline) {
      throw new CniInstallError(
        "cni_config_missing",
        `no CNI configuration (*.conflist, *.conf, *.json) in ${confDir} after ${Math.round(waitMs / 1000)} s: ambit-cni is chained after the node's network plugin, which has not written its configuration`,
      );
    }
    if (!told) {
      say.info({ confDir, waitSeconds: Math.round(waitMs / 1000) }, "waiting for the node's primary CNI configuration");
      told = true;
    }
    await sleep(Math.min(500, Math.max(1, deadline - Date.now())));
  }
}

/** Copies `from` to `to` unless `to` already has the same bytes; returns whether it wrote. */
function installBinary(from: string, to: string): boolean {
  if (sameContent(from, to)) return false;
  mkdirSync(dirname(to), { recursive: true });
  const temp = tempBeside(to);
  try {
    copyFileSync(from, temp);
    chmodSync(temp, 0o755);
    // On disk before the name points at it: a node losing power right after must not find a truncated plugin.
    const fd = openSync(temp, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, to);
  } finally {
    rmSync(temp, { force: true });
  }
  return true;
}

function sameContent(a: string, b: string): boolean {
  const sa = readIfExistsStat(a);
  const sb = readIfExistsStat(b);
  if (!sa || !sb || sa.size !== sb.size) return false;
  const fa = openSync(a, "r");
  const fb = openSync(b, "r");
  try {
    const ba = Buffer.allocUnsafe(1 << 20);
    const bb = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const na = readSync(fa, ba, 0, ba.length, null);
      const nb = readSync(fb, bb, 0, bb.length, null);
      if (na !== nb) return false;
      if (na === 0) return true;
      if (!ba.subarray(0, na).equals(bb.subarray(0, nb))) return false;
    }
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

/** Written to a temporary name in the same directory (not ending in a configuration extension), then renamed. */
function writeAtomic(path: string, data: Buffer, mode: number): void {
  const temp = tempBeside(path);
  try {
    const fd = openSync(temp, "w", mode);
    try {
      writeFileSync(fd, data);
      // The umask narrows the mode open(2) was given.
      fchmodSync(fd, mode);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, path);
  } finally {
    rmSync(temp, { force: true });
  }
}

function tempBeside(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.ambit-tmp`);
}

function readSmall(path: string): Buffer {
  const size = statSync(path).size;
  if (size > MAX_CONFIG_BYTES) throw new CniInstallError("cni_file_too_large", `${path} is over 1 MiB`);
  return readFileSync(path);
}

function readIfExists(path: string): Buffer | undefined {
  try {
    return readSmall(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

function readIfExistsStat(path: string): ReturnType<typeof statSync> | undefined {
  try {
    return statSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

function wrapConflistError<T>(file: string, f: () => T): T {
  try {
    return f();
  } catch (err) {
    if (err instanceof AmbitError) {
      throw new CniInstallError(err.code, `${file}: ${err.message}`, { cause: err });
    }
    throw err;
  }
}
