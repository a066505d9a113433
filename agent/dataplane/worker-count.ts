import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

/**
 * How many data-plane workers the agent runs by default: the CPUs it may use. That is the smaller of its CPU
 * affinity (availableParallelism counts the CPUs sched_getaffinity allows) and its cgroup CPU quota, rounded up: a
 * DaemonSet limited to 1.5 CPUs gets 2 workers, one pinned to 2 cores of a 64-core node gets 2. More workers than
 * that only take turns on the same CPUs.
 */
export function defaultWorkerCount(read: (path: string) => string | undefined = readText): number {
  const quota = cgroupCpuQuota(read);
  const cpus = availableParallelism();
  return Math.max(1, Math.min(cpus, quota === undefined ? cpus : Math.ceil(quota)));
}

/** CPUs the cgroup grants (quota / period), or undefined when unlimited or unknown. cgroup v2 first, then v1. */
export function cgroupCpuQuota(read: (path: string) => string | undefined = readText): number | undefined {
  const v2 = read("/sys/fs/cgroup/cpu.max")?.trim().split(/\s+/);
  if (v2 && v2.length === 2) return v2[0] === "max" ? undefined : ratio(v2[0], v2[1]);
  for (const dir of ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"]) {
    const quota = read(`${dir}/cpu.cfs_quota_us`)?.trim();
    if (quota === undefined) continue;
    return quota === "-1" ? undefined : ratio(quota, read(`${dir}/cpu.cfs_period_us`)?.trim());
  }
  return undefined;
}

function ratio(quota: string | undefined, period: string | undefined): number | undefined {
  const q = Number(quota);
  const p = Number(period);
  return q > 0 && p > 0 ? q / p : undefined;
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}
