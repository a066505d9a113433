/**
 * Running the demo's calls from inside pod namespaces and checking each against what should happen: the call's
 * outcome, and the `tls` of the connection the agents recorded (a passthrough must never claim mTLS, a meshed
 * call must never be plaintext).
 */
import type { ConfigDump } from "../admin/facts.js";
import type { MtlsMode } from "../kube/records.js";
import { endpointsOf, type SimCluster, type SimPod } from "../sim/index.js";
import { describeRows, rowsFor } from "./observe.js";
import { getIn, PORTS, waitFor } from "./processes.js";
import { APP_PORT, type Call, SERVICE_PORT } from "./scenario.js";

/** Rows already attributed to a call, across all phases ("node:id"). */
const used = new Set<string>();

function firstLine(err: unknown): string {
  const e = err as { stderr?: string; message?: string };
  return (e.stderr?.trim() || e.message || String(err)).split("\n")[0] as string;
}

/** Where a call goes: a pod's IP on the app port, or a Service's ClusterIP on the Service port (any endpoint). */
function destination(cluster: SimCluster, to: string): { url: string; label: string; pods: SimPod[] } {
  if (to.startsWith("svc/")) {
    const service = cluster.services.find((s) => s.name === to.slice(4));
    if (!service) throw new Error(`the demo cluster has no Service ${to}`);
    const vip = service.clusterIPs[0] as string;
    return {
      url: `http://${vip}:${SERVICE_PORT}/`,
      label: `${to} (${vip}):${SERVICE_PORT}`,
      pods: endpointsOf(service, cluster.pods),
    };
  }
  const pod = cluster.pods.find((p) => p.name === to);
  if (!pod) throw new Error(`the demo cluster has no pod ${to}`);
  return { url: `http://${pod.ipv4}:${APP_PORT}/`, label: `${to}:${APP_PORT}`, pods: [pod] };
}

/**
 * Runs each call in turn, printing two or three lines per call; returns how many did not behave as expected and
 * which pods answered (the endpoints a Service spread its calls over).
 */
export async function runCalls(
  cluster: SimCluster,
  calls: readonly Call[],
  out: (line: string) => void,
): Promise<{ failures: number; answeredBy: string[] }> {
  let failures = 0;
  const answeredBy: string[] = [];
  for (const call of calls) {
    const from = cluster.pods.find((p) => p.name === call.from) as SimPod;
    const to = destination(cluster, call.to);
    const t = Date.now();
    let answer = "";
    let error = "";
    try {
      answer = await getIn(cluster, from.netnsName, to.url, 3000);
    } catch (err) {
      error = firstLine(err);
    }
    const ms = Date.now() - t;
    const ok = error === "";
    const problems: string[] = [];
    if (ok !== call.expectOk) problems.push(call.expectOk ? `expected to succeed: ${error}` : "expected refusal");
    const lines: string[] = [];
    if (ok && call.expectTls !== undefined) {
      const server = /hello from (\S+);/.exec(answer)?.[1] ?? "";
      answeredBy.push(server);
      const served = to.pods.filter((p) => p.name === server);
      const rows = await rowsFor(
        cluster,
        from,
        served.length ? served : to.pods,
        APP_PORT,
        call.expectTls ? 2 : 1,
        used,
      );
      lines.push(...describeRows(from, server || call.to, rows));
      const wrong = rows.filter((r) => r.row.tls !== call.expectTls);
      if (rows.length === 0) problems.push("no agent recorded the connection");
      if (wrong.length > 0) problems.push(`expected tls=${call.expectTls}, agent ${wrong[0]?.node} recorded otherwise`);
      lines.push(`app answered: ${answer.trim()}`);
    } else if (!ok) {
      lines.push(`client saw: ${error}${call.expectOk ? "" : " (refused, as it should be)"}`);
    }
    failures += problems.length > 0 ? 1 : 0;
    const status = problems.length > 0 ? "FAIL" : "ok  ";
    out(`  ${status} ${`${call.from} -> ${to.label}`.padEnd(44)} ${call.what}, ${ms} ms`);
    for (const line of [...lines, ...problems.map((p) => `problem: ${p}`)]) out(`         ${line}`);
  }
  return { failures, answeredBy };
}

/** Waits until every agent's PeerAuthentication decision for `pod` (namespace/name) on the app port is `mode`. */
export async function waitForMode(cluster: SimCluster, pod: string, mode: MtlsMode): Promise<void> {
  const node = cluster.pods.find((p) => `${p.namespace}/${p.name}` === pod)?.nodeName;
  await waitFor(`the agents to apply PeerAuthentication ${mode} to ${pod}`, async () => {
    for (const n of cluster.nodes.filter((x) => x.name === node)) {
      const text = await getIn(cluster, n.netnsName, `http://127.0.0.1:${PORTS.admin}/config_dump`);
      const dump = JSON.parse(text) as ConfigDump;
      if (dump.pods.find((p) => p.pod === pod)?.peerAuthentication.mode !== mode) return false;
    }
    return true;
  });
}
