/**
 * Running the demo's calls from inside pod namespaces and checking each against what should happen: the call's
 * outcome, and the `tls` of the connection the agents recorded (a passthrough must never claim mTLS, a meshed
 * call must never be plaintext).
 */
import type { ConfigDump } from "../admin/facts.js";
import type { PeerAuthenticationMode } from "../kube/pod.js";
import type { SimCluster } from "../sim/index.js";
import { describeRows, rowsFor } from "./observe.js";
import { getIn, PORTS, waitFor } from "./processes.js";
import type { Call } from "./scenario.js";

/** Rows already attributed to a call, across both phases ("node:id"). */
const used = new Set<string>();

function firstLine(err: unknown): string {
  const e = err as { stderr?: string; message?: string };
  return (e.stderr?.trim() || e.message || String(err)).split("\n")[0] as string;
}

/** Runs each call in turn, printing two or three lines per call; returns how many did not behave as expected. */
export async function runCalls(
  cluster: SimCluster,
  calls: readonly Call[],
  port: number,
  out: (line: string) => void,
): Promise<number> {
  let failures = 0;
  for (const call of calls) {
    const from = cluster.pod(call.from);
    const to = cluster.pod(call.to);
    const t = Date.now();
    let answer = "";
    let error = "";
    try {
      answer = await getIn(cluster, from.netnsName, `http://${to.ipv4}:${port}/`, 3000);
    } catch (err) {
      error = firstLine(err);
    }
    const ms = Date.now() - t;
    const ok = error === "";
    const problems: string[] = [];
    if (ok !== call.expectOk) problems.push(call.expectOk ? `expected to succeed: ${error}` : "expected refusal");
    const label = `${call.from} -> ${call.to}:${port}`.padEnd(26);
    const lines: string[] = [];
    if (ok && call.expectTls !== undefined) {
      const rows = await rowsFor(cluster, from, to, port, call.expectTls ? 2 : 1, used);
      lines.push(...describeRows(from, to, rows));
      const wrong = rows.filter((r) => r.row.tls !== call.expectTls);
      if (rows.length === 0) problems.push("no agent recorded the connection");
      if (wrong.length > 0) problems.push(`expected tls=${call.expectTls}, agent ${wrong[0]?.node} recorded otherwise`);
      lines.push(`app answered: ${answer.trim()}`);
    } else if (!ok) {
      lines.push(`client saw: ${error}${call.expectOk ? "" : " (refused, as it should be)"}`);
    }
    failures += problems.length > 0 ? 1 : 0;
    const status = problems.length > 0 ? "FAIL" : "ok  ";
    out(`  ${status} ${label} ${call.what}, ${ms} ms`);
    for (const line of [...lines, ...problems.map((p) => `problem: ${p}`)]) out(`         ${line}`);
  }
  return failures;
}

/** Waits until every agent has applied a pod file that sets `mode` on the default namespace. */
export async function waitForMode(cluster: SimCluster, mode: PeerAuthenticationMode): Promise<void> {
  await waitFor(`the agents to apply PeerAuthentication ${mode}`, async () => {
    for (const node of cluster.nodes) {
      const text = await getIn(cluster, node.netnsName, `http://127.0.0.1:${PORTS.admin}/config_dump`);
      const dump = JSON.parse(text) as ConfigDump;
      if (dump.namespaces.find((n) => n.name === "default")?.peerAuthentication !== mode) return false;
    }
    return true;
  });
}
