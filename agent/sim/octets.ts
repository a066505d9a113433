import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * Machine-wide claims on a cluster's address octet. Clusters live in their own namespaces, so equal addresses in two
 * clusters never meet on a wire, but a node agent that finds pods' namespaces by scanning /proc sees every process
 * of the machine: two concurrent clusters (two test files, a demo beside a test run) with one octet would both claim
 * 10.k.1.2. A claim is a directory (mkdir is atomic) holding the owner's pid; a dead owner's claim is taken over.
 */
const CLAIMS_DIR = "/run/ambit-sim";

/** Claims the first free octet from `preferred` on (wrapping in 1..254); throws when all are taken. */
export function claimOctet(preferred: number): number {
  mkdirSync(CLAIMS_DIR, { recursive: true });
  for (let i = 0; i < 254; i++) {
    const octet = ((preferred - 1 + i) % 254) + 1;
    if (tryClaim(octet)) return octet;
  }
  throw new Error("every simulated cluster octet (1..254) is claimed");
}

export function releaseOctet(octet: number): void {
  const dir = claimDir(octet);
  if (ownerOf(dir) === process.pid) rmSync(dir, { recursive: true, force: true });
}

function claimDir(octet: number): string {
  return join(CLAIMS_DIR, `octet-${octet}`);
}

function tryClaim(octet: number): boolean {
  const dir = claimDir(octet);
  try {
    mkdirSync(dir);
  } catch {
    const owner = ownerOf(dir);
    // An owner that is alive keeps it, and so does a claim still being written (no pid yet, and recent).
    if (owner === undefined ? recent(dir) : alive(owner)) return false;
    rmSync(dir, { recursive: true, force: true });
    try {
      mkdirSync(dir);
    } catch {
      return false; // someone else took it over first
    }
  }
  writeFileSync(join(dir, "pid"), String(process.pid));
  return true;
}

function ownerOf(dir: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(dir, "pid"), "utf8"));
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function recent(dir: string): boolean {
  try {
    return Date.now() - statSync(dir).mtimeMs < 10_000;
  } catch {
    return false;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
