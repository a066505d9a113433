/**
 * An agent replaced by a new process on its node (the scenario is support/upgrade.ts's, shared with
 * `make bench BENCH=upgrade`): zero failed connects either way, the long transfer intact, no plaintext on the wire,
 * the same table throughout; then after a crash the pod fails closed and a new agent restores it.
 */
import test from "ava";
import { clusterFor } from "./support/cluster.js";
import { markerSegments, plaintextSegments, runUpgrade, UPGRADE_MARKER, UPGRADE_TOPOLOGY } from "./support/upgrade.js";

test("an agent replaced by a new process: no failed connect either way, a long transfer intact, no plaintext; a crash is restored within a measured bound", async (t) => {
  t.timeout(90_000);
  const cluster = await clusterFor(t, UPGRADE_TOPOLOGY);
  const run = await runUpgrade(cluster);
  const { inbound, outbound } = run;

  t.log(
    `handover: new agent listening ${(run.readyMs / 1000).toFixed(2)} s after start; old agent's listeners closed ` +
      `${run.closedMs.toFixed(0)} ms after SIGTERM, exited (code ${run.exitCode}) after ${(run.exitedMs / 1000).toFixed(2)} s`,
  );
  t.log(
    `connections a->b ${inbound.ok} ok / ${inbound.failed} failed, b->a ${outbound.ok} ok / ${outbound.failed} failed ` +
      `${JSON.stringify([...inbound.errors, ...outbound.errors])}; b's outbound while both listened: old ${run.spread.old}, new ${run.spread.new}`,
  );
  t.log(
    `after SIGKILL, a new agent restored a -> b ${(run.crash.restoredFromStartMs / 1000).toFixed(2)} s after it was ` +
      `started (${(run.crash.restoredFromKillMs / 1000).toFixed(2)} s after the kill)`,
  );
  t.is(run.tables.afterJoin, run.tables.before, "the new agent re-applied the same table");
  t.is(run.exitCode, 0);
  t.true(run.probes.successorReadyBeforeTerm, "the new agent's probe file said ready while the old one held the port");
  t.is(run.probes.readyStatusBeforeTerm, 200, "the old agent answered on the node's readiness port meanwhile");
  t.false(run.probes.oldReadyAfterTerm, "the draining agent's probe file said not ready");
  t.true(run.probes.portTakenMs < 5000, "the new agent took the port once the old one exited");
  t.true(inbound.ok > 50 && outbound.ok > 50, "traffic ran through the handover");
  t.is(inbound.failed + outbound.failed, 0, "no connection failed");
  t.is(run.transfer.error, undefined, "the long transfer completed intact through the handover");
  t.true(run.wire.segments.length > 1000, "the capture saw the traffic");
  const plain = plaintextSegments(run.wire.segments);
  t.is(
    plain.length,
    0,
    `nothing but HBONE crossed between the nodes: ${plain.slice(0, 3).map((p) => `${p.src}:${p.srcPort} -> ${p.dst}:${p.dstPort}`)}`,
  );
  t.is(markerSegments(run.wire.segments).length, 0, "no payload crossed between the nodes in plaintext");
  t.false(run.wire.bytes.includes(UPGRADE_MARKER), "not even split across segments");
  t.is(run.tables.afterExit, run.tables.before, "the old agent left the rules in place");

  t.not(run.crash.whileDown, "answered", "refused while no agent runs (fails closed)");
  t.true(run.crash.rulesWhileDown > 0);
  t.true(run.crash.restoredFromStartMs < 20_000);
});
