/** Small helpers shared by the benches: statistics, formatting, process CPU accounting, temp dirs. */
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Stats {
  median: number;
  p99: number;
}

export function stats(samples: readonly number[]): Stats {
  if (samples.length === 0) return { median: Number.NaN, p99: Number.NaN };
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))] as number;
  return { median: at(0.5), p99: at(0.99) };
}

export const pad = (v: string, n: number) => v.padStart(n);
export const ratio = (v: number, base: number) => (base > 0 && Number.isFinite(v) ? `${(v / base).toFixed(2)}x` : "-");
export const fixed = (v: number, digits = 2) => (Number.isFinite(v) ? v.toFixed(digits) : "-");

/** A fresh temp dir, removed by the returned function (idempotent, never throws). */
export function tempDir(tag: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `ambit-bench-${tag}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

const CLOCK_TICKS = 100; // USER_HZ on Linux.

/** CPU seconds (user + system) a process has used so far, or NaN if it is gone. */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may contain spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return Number.NaN;
  }
}

/** Sum of CPU seconds over a process and its direct children (nginx master + workers). */
export function treeCpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  let total = cpuSeconds(pid);
  try {
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
    for (const c of children) total += cpuSeconds(Number(c));
  } catch {
    // No children file: count the process alone.
  }
  return total;
}

/** Busy and total jiffies of the whole machine (all cores), from the first line of /proc/stat. */
function machineJiffies(): { busy: number; total: number } {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
  const total = f.reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0); // idle + iowait
  return { busy: total - idle, total };
}

/**
 * Measures the CPU share (percent of one core) each process used while `fn` ran, plus "machine": how busy all
 * cores were (percent of the whole machine), which tells a CPU-bound run from a latency-bound one.
 */
export async function withCpu<T>(
  pids: Record<string, number | undefined>,
  fn: () => Promise<T>,
): Promise<{ result: T; cpu: Record<string, number>; wall: number }> {
  const before = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, treeCpuSeconds(p)]));
  const m0 = machineJiffies();
  const t0 = performance.now();
  const result = await fn();
  const wall = (performance.now() - t0) / 1000;
  const m1 = machineJiffies();
  const cpu = Object.fromEntries(
    Object.entries(pids).map(([k, p]) => [k, ((treeCpuSeconds(p) - (before[k] as number)) / wall) * 100]),
  );
  cpu.machine = ((m1.busy - m0.busy) / Math.max(1, m1.total - m0.total)) * 100;
  return { result, cpu, wall };
}

/** Keeps the last `limit` characters a child wrote to stdout/stderr, for error messages. */
export function captureOutput(child: ChildProcess, limit = 4000): () => string {
  let text = "";
  const add = (chunk: Buffer) => {
    text = (text + chunk.toString("utf8")).slice(-limit);
  };
  child.stdout?.on("data", add);
  child.stderr?.on("data", add);
  return () => text;
}

/** Resident memory of a process, in MiB. */
export function rssMiB(pid: number | undefined): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? Number.NaN) / 1024;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `check` until it returns true or `timeoutMs` passes; throws with `what` on timeout. */
export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    const ok = await check().catch((err: unknown) => {
      last = err;
      return false;
    });
    if (ok) return;
    last ??= new Error("the check never passed");
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, last ? { cause: last } : undefined);
    }
    await sleep(100);
  }
}

/** What kubeMeshFor needs from its caller outside ava: teardowns kept, run last first by `cleanup()`. */
export function benchOwner(): { owner: { teardown(fn: () => unknown): void; log(): void }; cleanup(): Promise<void> } {
  const cleanups: Array<() => unknown> = [];
  return {
    owner: { teardown: (fn) => cleanups.push(fn), log: () => {} },
    cleanup: async () => {
      for (const fn of cleanups.reverse()) await fn();
    },
  };
}

/** A one-node sim cluster spec of `count` pods p0..p(count-1) in `namespace`, found through /proc as in a cluster. */
export function onePodNode(count: number, namespace: string) {
  return {
    nodes: [
      {
        name: "n1",
        pods: Array.from({ length: count }, (_, i) => ({ name: `p${i}`, namespace, discover: true })),
      },
    ],
  };
}
