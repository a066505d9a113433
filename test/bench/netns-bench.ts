/**
 * Cost of finding pods' network namespaces by a /proc scan (agent/netns/discovery.ts) as the node's process count
 * grows: `sleep` processes in the agent's own namespace stand for a busy node's (each is one more /proc entry to
 * read), and PODS simulated pods have one process each. Figures per resolve: cold (a fresh listing and every pod
 * namespace's addresses read), warm (listing and addresses from the cache, the answer confirmed through its
 * descriptor), and a burst of every pod resolved one after the other from cold, as at an agent start.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { performance } from "node:perf_hooks";
import { NetnsDiscovery, type ScanStats } from "../../agent/netns/discovery.js";
import { wantedIps } from "../../agent/netns/namespace-match.js";
import { NetnsRegistry } from "../../agent/netns/netns-registry.js";
import { createSimCluster, type SimCluster } from "../../agent/sim/index.js";
import { closeFdQuietly } from "../../native-bindings/libc.js";
import { fixed, pad, stats } from "./support.js";

const PODS = 50;
const EXTRA_PROCESSES = [0, 1000, 4000];
const ROUNDS = 20;

async function startSleepers(n: number, into: ChildProcess[]): Promise<void> {
  for (let i = 0; i < n; i++) {
    const child = spawn("sleep", ["infinity"], { stdio: "ignore" });
    into.push(child);
    await once(child, "spawn");
  }
}

async function stopAll(children: ChildProcess[]): Promise<void> {
  await Promise.all(
    children.splice(0).map((c) => {
      if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
      const exited = once(c, "exit");
      c.kill("SIGKILL");
      return exited;
    }),
  );
}

function findOnce(discovery: NetnsDiscovery, ip: string): ScanStats {
  const r = discovery.find(wantedIps([ip]));
  if (r.kind !== "found") throw new Error(`bench pod ${ip} not found: ${r.kind}`);
  closeFdQuietly(r.netns.fd);
  return r.stats;
}

export async function runNetnsBench(): Promise<string> {
  let cluster: SimCluster | undefined;
  const extra: ChildProcess[] = [];
  const inPods: ChildProcess[] = [];
  const rows: string[] = [];
  try {
    const c = await createSimCluster({
      nodes: [{ name: "n1", pods: Array.from({ length: PODS }, (_, i) => ({ name: `p${i}` })) }],
    });
    cluster = c;
    for (const pod of c.pods) {
      const child = c.spawnIn(pod.netnsName, "sleep", ["infinity"]);
      inPods.push(child);
      await once(child, "spawn");
    }
    // `ip netns exec` enters before it execs; give the last ones a moment to be inside.
    await new Promise((r) => setTimeout(r, 500));
    const last = c.pods.at(-1)?.ipv4 as string;
    findOnce(new NetnsDiscovery(), last); // Warm-up: the first calls pay for loading and compiling.
    for (const target of EXTRA_PROCESSES) {
      await startSleepers(target - extra.length, extra);
      const cold: number[] = [];
      const listing: number[] = [];
      const warm: number[] = [];
      let seen: ScanStats | undefined;
      for (let i = 0; i < ROUNDS; i++) {
        const discovery = new NetnsDiscovery();
        seen = findOnce(discovery, last);
        cold.push(seen.ms);
        listing.push(seen.listMs);
        warm.push(findOnce(discovery, last).ms);
      }
      const registry = new NetnsRegistry();
      const t0 = performance.now();
      for (const [i, pod] of c.pods.entries()) {
        const r = registry.resolve({ key: `default/${pod.name}`, uid: `uid-${i}`, ips: [pod.ipv4] });
        if (!r.ok) throw new Error(`burst: ${pod.name} ${r.reason}`);
      }
      const burst = performance.now() - t0;
      registry.releaseAll();
      const s = seen as ScanStats;
      const [c50, l50, w50] = [stats(cold).median, stats(listing).median, stats(warm).median];
      rows.push(
        [
          pad(String(s.processes), 9),
          pad(String(s.namespaces), 10),
          pad(fixed(c50), 8),
          pad(fixed(l50), 8),
          pad(fixed((l50 * 1000) / s.processes, 1), 11),
          pad(fixed(((c50 - l50) * 1000) / s.namespaces, 0), 10),
          pad(fixed(w50, 3), 8),
          pad(fixed(burst, 1), 13),
        ].join(" "),
      );
    }
  } finally {
    await stopAll(extra);
    await stopAll(inPods);
    await cluster?.destroy();
  }
  return [
    `Resolving a pod's namespace by /proc scan, ${PODS} pod namespaces with a process each; median of ${ROUNDS} (ms)`,
    "cold: fresh listing + every namespace read; list: the listing alone; warm: from the cache, confirmed by fd",
    [
      pad("processes", 9),
      pad("namespaces", 10),
      pad("cold ms", 8),
      pad("list ms", 8),
      pad("list us/pr", 11),
      pad("read us/ns", 10),
      pad("warm ms", 8),
      pad(`burst ${PODS} ms`, 13),
    ].join(" "),
    ...rows,
  ].join("\n");
}
