import { randomBytes } from "node:crypto";
import { access, link, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
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
 */
export async function loadOrCreateCa(
  dir: string,
  options: { trustDomain: string; leafLifetimeSec?: number; logger?: Logger },
): Promise<MeshCa> {
  const log = options.logger ?? silentLogger;
  const files = { certFile: join(dir, "ca.crt"), keyFile: join(dir, "ca.key") };
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
  const ca = await loadCaFromFiles(files, options);
  log.info({ dir }, "mesh CA loaded from disk");
  return ca;
}

const CERT_WAIT_MS = 5000;

/** True if this process's root became the directory's; false if another process's key got there first. */
async function publish(dir: string, files: CaFiles, material: CaMaterial): Promise<boolean> {
  const tmp = (file: string) => `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  const keyTmp = tmp(files.keyFile);
  const certTmp = tmp(files.certFile);
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
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
