/**
 * `make bench BENCH=upgrade`: an agent replaced by a new process while traffic runs, as a DaemonSet with maxSurge
 * does it (issue 15: no refused connection, no cut connection within the drain window), then a crash.
 *
 *   n1: a (meshed)   <->   n2: b (meshed); n2's agent is replaced, then killed
 *
 * The scenario is test/netns/agent-upgrade.test.ts's (test/netns/support/upgrade.ts): 3 + 3 parallel streams of new
 * connections a -> b and b -> a, plus one paced transfer a -> b (24 MiB up, 4 MiB down, about 9 s), with tcpdump on
 * b's interface. A new n2 agent starts beside the old one; once both listen in b the old one gets SIGTERM and
 * drains. Then the new agent is SIGKILLed and a third one started: how long until a -> b answers again.
 */
import { createSimCluster } from "../../agent/sim/index.js";
import {
  type LoadResult,
  markerSegments,
  plaintextSegments,
  runUpgrade,
  UPGRADE_TOPOLOGY,
} from "../netns/support/upgrade.js";
import { fixed } from "./support.js";

const MiB = 1024 * 1024;

const seconds = (ms: number) => `${fixed(ms / 1000)} s`;
const verdict = (ok: boolean) => (ok ? "PASS" : "MISSED");

const row = (label: string, value: string) => `  ${label.padEnd(46)} ${value}`;

function load(what: string, r: LoadResult): string {
  const errors = [...r.errors].map(([code, n]) => `${code} ${n}`).join(", ");
  return row(
    what,
    `${String(r.ok).padStart(6)} ok ${String(r.failed).padStart(4)} failed${errors ? ` (${errors})` : ""}`,
  );
}

export async function runUpgradeBench(): Promise<string> {
  // Destroyed in `finally` (and by the sim's signal hooks on Ctrl-C), so a failed run leaves no namespace behind.
  const cluster = await createSimCluster(UPGRADE_TOPOLOGY);
  try {
    const run = await runUpgrade(cluster);
    const { segments } = run.wire;
    const plain = plaintextSegments(segments).length;
    const marked = markerSegments(segments).length;
    const failed = run.inbound.failed + run.outbound.failed;
    const t = run.transfer;
    const transfer = t.error
      ? `FAILED: ${t.error}`
      : `${t.up / MiB} MiB up + ${t.down / MiB} MiB down in ${seconds(t.ms)}, SHA-256 ok both ways`;
    const tablesKept = run.tables.afterJoin === run.tables.before && run.tables.afterExit === run.tables.before;
    return [
      "  new connections during the handover (3 + 3 parallel, one request each):",
      load("a -> b (inbound HBONE at n2)", run.inbound),
      load("b -> a (outbound from n2)", run.outbound),
      row("long transfer a -> b", transfer),
      row(
        "wire (b's interface)",
        `${segments.length} TCP segments: ${plain} outside HBONE (15008), ${marked} carrying the app's marker`,
      ),
      row("b's outbound with both listening", `old agent ${run.spread.old}, new agent ${run.spread.new} (2 s)`),
      row("nftables table in b", tablesKept ? "identical under the old, both, and the new agent" : "CHANGED"),
      "  handover",
      row("  new agent start -> listening beside the old", seconds(run.readyMs)),
      row("  SIGTERM -> old agent's listeners closed", `${fixed(run.closedMs, 0)} ms`),
      row(
        "  SIGTERM -> old agent exited",
        `${seconds(run.exitedMs)} (code ${run.exitCode}; the drain ends with the last connection)`,
      ),
      row(
        "  new agent's probe file while the old held the node's ports",
        `${run.probes.successorReadyBeforeTerm ? "ready" : "NOT ready"} (the port answered ${run.probes.readyStatusBeforeTerm}, from the old agent)`,
      ),
      row("  old agent exit -> new agent serving the readiness port", `${fixed(run.probes.portTakenMs, 0)} ms`),
      "  crash (SIGKILL of the new agent)",
      row("  a -> b while no agent runs on n2", `${run.crash.whileDown} (${run.crash.rulesWhileDown} rules in force)`),
      row("  restored, from the next agent's start", seconds(run.crash.restoredFromStartMs)),
      row("  restored, from the SIGKILL", seconds(run.crash.restoredFromKillMs)),
      "",
      `  target: zero failed connects during the handover: ${failed} ${verdict(failed === 0)}`,
      `  target: the long transfer completes intact: ${verdict(!t.error)}`,
      `  target: zero plaintext packets between the nodes: ${plain + marked} ${verdict(plain + marked === 0)}`,
      `  target: fails closed while no agent runs: ${verdict(run.crash.whileDown !== "answered")}`,
    ].join("\n");
  } finally {
    await cluster.destroy();
  }
}
