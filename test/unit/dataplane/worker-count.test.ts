import { availableParallelism } from "node:os";
import test from "ava";
import { cgroupCpuQuota, defaultWorkerCount } from "../../../agent/dataplane/worker-count.js";

const files = (table: Record<string, string>) => (path: string) => table[path];

test("cgroup quota: v2 cpu.max, v1 cfs quota/period, unlimited", (t) => {
  t.is(cgroupCpuQuota(files({ "/sys/fs/cgroup/cpu.max": "150000 100000\n" })), 1.5);
  t.is(cgroupCpuQuota(files({ "/sys/fs/cgroup/cpu.max": "max 100000\n" })), undefined);
  const v1 = { "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "200000\n", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n" };
  t.is(cgroupCpuQuota(files(v1)), 2);
  t.is(cgroupCpuQuota(files({ "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1" })), undefined);
  t.is(cgroupCpuQuota(files({})), undefined);
});

test("workers: the smaller of the affinity and the quota rounded up, at least one", (t) => {
  const cpus = availableParallelism();
  t.is(defaultWorkerCount(files({})), cpus);
  t.is(defaultWorkerCount(files({ "/sys/fs/cgroup/cpu.max": "50000 100000" })), 1);
  t.is(defaultWorkerCount(files({ "/sys/fs/cgroup/cpu.max": "10000000 100000" })), cpus);
  t.is(defaultWorkerCount(files({ "/sys/fs/cgroup/cpu.max": "1 100000" })), 1);
});
