import { access, mkdir, readFile, rename, writeFile } from "node:fs/promises";
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
 * restart keeps the same trust bundle (and every issued certificate stays valid). The key is written 0600 via a
 * temporary file and rename, so a crash never leaves a half-written key that a restart would then refuse.
 */
export async function loadOrCreateCa(
  dir: string,
  options: { trustDomain: string; leafLifetimeSec?: number; logger?: Logger },
): Promise<MeshCa> {
  const log = options.logger ?? silentLogger;
  const files = { certFile: join(dir, "ca.crt"), keyFile: join(dir, "ca.key") };
  const [hasCert, hasKey] = await Promise.all([exists(files.certFile), exists(files.keyFile)]);
  if (hasCert && hasKey) {
    const ca = await loadCaFromFiles(files, options);
    log.info({ dir }, "mesh CA loaded from disk");
    return ca;
  }
  // Half a CA is an operator mistake; regenerating would silently replace the root every peer trusts.
  if (hasCert || hasKey) throw new IdentityError("ca_files", `${dir} holds only one of ca.crt and ca.key`);
  const material = await MeshCa.generateRoot(options.trustDomain);
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFile(`${files.keyFile}.tmp`, material.keyPem, { mode: 0o600 });
    await rename(`${files.keyFile}.tmp`, files.keyFile);
    await writeFile(`${files.certFile}.tmp`, material.certPem, { mode: 0o644 });
    await rename(`${files.certFile}.tmp`, files.certFile);
  } catch (cause) {
    throw new IdentityError("ca_files", `cannot write the generated CA to ${dir}`, { cause });
  }
  log.info({ dir, trustDomain: options.trustDomain }, "generated a new mesh CA root and saved it");
  return new MeshCa(material, options);
}
