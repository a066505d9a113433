import { randomBytes } from "node:crypto";
import type { Stats } from "node:fs";
import { access, chmod, link, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../log.js";
import { silentLogger } from "../log.js";
import { type CaMaterial, MeshCa } from "./ca.js";
import { IdentityError } from "./errors.js";

export interface CaFiles {
  certFile: string;
  keyFile: string;
  /** Optional roots file; needed when the CA certificate is an intermediate. */
  bundleFile?: string;
}

async function read(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (cause) {
    throw new IdentityError("ca_files", `cannot read CA ${what} ${path}`, { cause });
  }
}

/** Kubernetes mode: the root key and certificate come from a mounted Secret. */
export async function loadCaFromFiles(
  files: CaFiles,
  options: { trustDomain: string; leafLifetimeSec?: number },
): Promise<MeshCa> {
  const material: CaMaterial = {
    certPem: await read(files.certFile, "certificate"),
    keyPem: await read(files.keyFile, "key"),
  };
  if (files.bundleFile) material.bundlePem = await read(files.bundleFile, "trust bundle");
  return new MeshCa(material, options);
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Local mode: reuse `dir/ca.crt` + `dir/ca.key` if they exist, otherwise generate a root and write it there so a
 * restart keeps the same trust bundle (and every issued certificate stays valid).
 *
 * Several agents may share the directory and start at once (a simulated cluster): the key is published with
 * link(), which fails if the name exists, so exactly one generated root wins; the others drop theirs and load the
 * winner's once its certificate appears. Both files are written under unique temporary names first, so a crash
 * never leaves a half-written key.
 *
 * The directory must be this user's alone: whoever can write to it can plant a root of their choosing before the
 * first start (a predictable path under /tmp) or swap it later, and every peer would trust it. One writable by
 * anyone else, or owned by another user, is refused; one merely readable by others is made 0700, and a key file
 * readable by others (copied in by hand) is made 0600, each with a warning.
 */
export async function loadOrCreateCa(
  dir: string,
  options: { trustDomain: string; leafLifetimeSec?: number; logger?: Logger },
): Promise<MeshCa> {
  const log = options.logger ?? silentLogger;
  const files = { certFile: join(dir, "ca.crt"), keyFile: join(dir, "ca.key") };
  await privateDirectory(dir, log);
  if (!(await exists(files.keyFile))) {
    const material = await MeshCa.generateRoot(options.trustDomain);
    if (await publish(dir, files, material)) {
      log.info({ dir, trustDomain: options.trustDomain }, "generated a new mesh CA root and saved it");
      return new MeshCa(material, options);
    }
  }
  // Another process published the key; its certificate follows within moments. A key alone for longer is an
  // operator mistake, and regenerating would silently replace the root every peer trusts.
  for (let waited = 0; !(await exists(files.certFile)); waited += 50) {
    if (waited >= CERT_WAIT_MS) throw new IdentityError("ca_files", `${dir} holds ca.key but no ca.crt`);
    await new Promise((r) => setTimeout(r, 50));
  }
  await privateKeyFile(files.keyFile, log);
  const ca = await loadCaFromFiles(files, options);
  log.info({ dir }, "mesh CA loaded from disk");
  return ca;
}

const CERT_WAIT_MS = 5000;

const octal = (mode: number) => `0${(mode & 0o777).toString(8)}`;

function ownedByUs(st: Stats, path: string): void {
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new IdentityError("ca_files", `${path} belongs to uid ${st.uid}, not to this process (uid ${uid})`);
  }
}

/** Creates `dir` 0700, or checks an existing one (see loadOrCreateCa). */
async function privateDirectory(dir: string, log: Logger): Promise<void> {
  let st: Stats;
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    st = await stat(dir);
  } catch (cause) {
    throw new IdentityError("ca_files", `cannot create the CA directory ${dir}`, { cause });
  }
  if (!st.isDirectory()) throw new IdentityError("ca_files", `${dir} is not a directory`);
  ownedByUs(st, dir);
  if (st.mode & 0o022) {
    throw new IdentityError(
      "ca_files",
      `the CA directory ${dir} is writable by others (mode ${octal(st.mode)}): anyone who can write there can replace the root`,
    );
  }
  if (st.mode & 0o077) {
    await tighten(dir, 0o700);
    log.warn({ dir, was: octal(st.mode) }, "the CA directory was readable by other users; made it 0700");
  }
}

/** An existing ca.key: ours, and readable by us alone. */
async function privateKeyFile(path: string, log: Logger): Promise<void> {
  let st: Stats;
  try {
    st = await stat(path);
  } catch (cause) {
    throw new IdentityError("ca_files", `cannot read CA key ${path}`, { cause });
  }
  ownedByUs(st, path);
  if (st.mode & 0o077) {
    await tighten(path, 0o600);
    log.warn({ file: path, was: octal(st.mode) }, "the CA key was readable by other users; made it 0600");
  }
}

async function tighten(path: string, mode: number): Promise<void> {
  try {
    await chmod(path, mode);
  } catch (cause) {
    throw new IdentityError("ca_files", `cannot make ${path} mode ${octal(mode)}`, { cause });
  }
}

/** True if this process's root became the directory's; false if another process's key got there first. */
async function publish(dir: string, files: CaFiles, material: CaMaterial): Promise<boolean> {
  const tmp = (file: string) => `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  const keyTmp = tmp(files.keyFile);
  const certTmp = tmp(files.certFile);
  try {
    if (await exists(files.keyFile)) return false;
    if (await exists(files.certFile)) {
      throw new IdentityError("ca_files", `${dir} holds ca.crt but no ca.key`);
    }
    await writeFile(keyTmp, material.keyPem, { mode: 0o600 });
    try {
      await link(keyTmp, files.keyFile);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw err;
    }
    await writeFile(certTmp, material.certPem, { mode: 0o644 });
    await rename(certTmp, files.certFile);
    return true;
  } catch (cause) {
    if (cause instanceof IdentityError) throw cause;
    throw new IdentityError("ca_files", `cannot write the generated CA to ${dir}`, { cause });
  } finally {
    await rm(keyTmp, { force: true });
    await rm(certTmp, { force: true });
  }
}
