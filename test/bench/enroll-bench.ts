/**
 * Cost of enrolling one pod (its redirect rules, and for ambit its in-pod listeners), over 100 pod namespaces on
 * one simulated node: ambit's in-process Redirector (libnftables through koffi + setns) against exec'ing the nft
 * binary with the same ruleset (JSON, and the equivalent text that nft itself lists), and iptables-restore when
 * it is installed. Each variant starts from pods without the table and removes it afterwards.
 */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { objectKey } from "../../agent/kube/records.js";
import { NetnsRegistry } from "../../agent/netns/netns-registry.js";
import { type EnrollTarget, type ListenerFactory, Redirector } from "../../agent/redirect/enroller.js";
import { buildRedirectRules, buildRemoveRules } from "../../agent/redirect/rules.js";
import { createSimCluster, type SimCluster } from "../../agent/sim/index.js";
import { inNetnsFd } from "../../native-bindings/netns.js";
import { runNftJson } from "../../native-bindings/nftables.js";
import { serveWithNode } from "../netns/support/node-listener.js";
import { fixed, pad, ratio, type Stats, stats, tempDir } from "./support.js";

const PODS = 100;
const MESHED = { "ambit.dev/mesh": "enabled" };

function hasCommand(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

async function timeEach(pods: EnrollTarget[], fn: (pod: EnrollTarget) => unknown): Promise<number[]> {
  const samples: number[] = [];
  for (const pod of pods) {
    const t0 = performance.now();
    await fn(pod);
    samples.push(performance.now() - t0);
  }
  return samples;
}

function removeAll(pods: EnrollTarget[]): void {
  for (const pod of pods) inNetnsFd(pod.netns.fd, () => runNftJson(buildRemoveRules()));
}

/** Netns name from /var/run/netns/NAME. */
const netnsName = ({ pod }: EnrollTarget) => (pod.netns ?? "").slice((pod.netns ?? "").lastIndexOf("/") + 1);

export async function runEnrollBench(): Promise<string> {
  let cluster: SimCluster | undefined;
  const tmp = tempDir("enroll");
  const redirector = new Redirector();
  const registry = new NetnsRegistry();
  try {
    const t0 = performance.now();
    cluster = await createSimCluster({
      nodes: [{ name: "n1", pods: Array.from({ length: PODS }, (_, i) => ({ name: `p${i}`, labels: MESHED })) }],
    });
    const c = cluster;
    const setupMs = performance.now() - t0;
    // Each pod's namespace held by descriptor, as the agent holds them (the path comes from the sim's manifests).
    const pods = [...c.clusterState().pods.values()].map((pod): EnrollTarget => {
      const found = registry.resolve({ key: objectKey(pod), uid: pod.uid, ips: pod.ips, netns: pod.netns ?? "" });
      if (!found.ok) throw found.error;
      return { pod, netns: found.netns };
    });
    const factory: ListenerFactory = (_kind, _family, _target, fd) =>
      serveWithNode(
        createServer((s) => s.destroy()),
        fd,
      );
    const rows: Array<{ label: string; s: Stats; note?: string }> = [];

    // Warm-up (koffi symbol binding, JIT, first libnftables context), then back to a pod without the table.
    redirector.enroll(pods[0] as EnrollTarget, factory);
    redirector.unenroll(objectKey((pods[0] as EnrollTarget).pod));
    // Every variant then starts from the same state: a namespace that once had the table and no longer does.
    const firstTime = stats(
      await timeEach(pods.slice(1), (pod) => inNetnsFd(pod.netns.fd, () => runNftJson(buildRedirectRules()))),
    );
    removeAll(pods);

    // (a) ambit: listeners + rules in one setns visit, in-process.
    const ambit = stats(await timeEach(pods, (pod) => redirector.enroll(pod, factory)));
    rows.push({ label: "(a) ambit Redirector.enroll (rules + 3 listeners)", s: ambit });
    // The text form nft itself prints for the installed table: the same ruleset for `nft -f`.
    const listed = (await c.exec(netnsName(pods[0] as EnrollTarget), "nft", ["list", "table", "inet", "ambit"])).stdout;
    const text = `add table inet ambit\ndelete table inet ambit\n${listed}`;
    const unenroll = stats(await timeEach(pods, (pod) => redirector.unenroll(objectKey(pod.pod))));

    // (a') the rules part alone, libnftables in-process.
    const rulesOnly = stats(
      await timeEach(pods, (pod) => inNetnsFd(pod.netns.fd, () => runNftJson(buildRedirectRules()))),
    );
    const reapply = stats(
      await timeEach(pods, (pod) => inNetnsFd(pod.netns.fd, () => runNftJson(buildRedirectRules()))),
    );
    removeAll(pods);
    rows.push({ label: "    rules only, libnftables in-process (setns)", s: rulesOnly });
    rows.push({ label: "    same, table already there (re-enrollment)", s: reapply });
    rows.push({ label: "    same, first table ever in the namespace", s: firstTime });

    // (b) exec the nft binary in the pod namespace. The ruleset goes in a file written beforehand: nft opens
    // /dev/stdin, which fails on the socketpair Node gives a child as stdin. Every pod's table is the same.
    const rulesFile = join(tmp.dir, "rules.json");
    writeFileSync(rulesFile, JSON.stringify(buildRedirectRules()));
    const textFile = join(tmp.dir, "ambit.nft");
    writeFileSync(textFile, text);
    const json = stats(await timeEach(pods, (pod) => c.exec(netnsName(pod), "nft", ["-j", "-f", rulesFile])));
    removeAll(pods);
    rows.push({ label: "(b) ip netns exec nft -j -f FILE (same JSON)", s: json });
    const txt = stats(await timeEach(pods, (pod) => c.exec(netnsName(pod), "nft", ["-f", textFile])));
    removeAll(pods);
    rows.push({ label: "    ip netns exec nft -f FILE (same rules, text)", s: txt });

    const notes: string[] = [];
    if (!hasCommand("iptables-restore")) {
      notes.push("(c) iptables-restore: skipped, not installed (Debian package iptables is not part of make setup)");
    } else {
      notes.push("(c) iptables-restore: installed, but no equivalent ruleset is generated yet; skipped");
    }

    const w = 10;
    const lines = [
      `enroll bench: one pod's enrollment, ${PODS} pod namespaces on one simulated node (IPv4), node ${process.version}`,
      `  (simulated node with ${PODS} pods built in ${fixed(setupMs / 1000, 1)} s; timings include, for (b), spawning ip + nft)`,
      "",
      `${"".padEnd(50)}${pad("median ms", w)}${pad("p99 ms", w)}${pad("med/(a)", w)}${pad("p99/(a)", w)}`,
      ...rows.map(
        (r) =>
          `${r.label.padEnd(50)}${pad(fixed(r.s.median, 3), w)}${pad(fixed(r.s.p99, 3), w)}` +
          `${pad(ratio(r.s.median, ambit.median), w)}${pad(ratio(r.s.p99, ambit.p99), w)}`,
      ),
      `${"    ambit unenroll (remove table, close listeners)".padEnd(50)}${pad(fixed(unenroll.median, 3), w)}${pad(fixed(unenroll.p99, 3), w)}`,
      ...notes.map((n) => `${n}`),
    ];
    return lines.join("\n");
  } finally {
    redirector.closeListenersOnly();
    registry.releaseAll();
    await cluster?.destroy();
    tmp.remove();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(await runEnrollBench());
}
