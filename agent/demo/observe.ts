/**
 * What the demo reads back from the agents: connection rows from the admin server's `/connections`, handshake
 * timings and refusals from `/metrics`. Parsing and formatting are pure; fetching goes through the node namespace.
 */
import type { ConnectionRow, ConnectionsSnapshot } from "../admin/connection-tracker.js";
import { formatBytes } from "../cli/tap-format.js";
import type { SimCluster, SimNode, SimPod } from "../sim/index.js";
import { getIn, PORTS, sleep } from "./processes.js";

export interface SeenRow {
  node: string;
  row: ConnectionRow;
}

/** Closed connection rows of every agent (the demo's calls are short: they are closed by the time we look). */
export async function closedRows(cluster: SimCluster): Promise<SeenRow[]> {
  const all = await Promise.all(
    cluster.nodes.map(async (node) => {
      const text = await getIn(cluster, node.netnsName, `http://127.0.0.1:${PORTS.admin}/connections`);
      const snap = JSON.parse(text) as ConnectionsSnapshot;
      return snap.recent.map((row) => ({ node: node.name, row }));
    }),
  );
  return all.flat();
}

/**
 * Rows for one call from `from` to one of `to` (a pod, or a Service's endpoints) on `port`, not reported before
 * (`used` holds "node:id"). Waits until `want` rows are there (2 when both ends are meshed: each agent reports its
 * side) or the timeout passes.
 */
export async function rowsFor(
  cluster: SimCluster,
  from: SimPod,
  to: readonly SimPod[],
  port: number,
  want: number,
  used: Set<string>,
  timeoutMs = 3000,
): Promise<SeenRow[]> {
  const deadline = Date.now() + timeoutMs;
  const targets = new Set(to.map((p) => p.ipv4));
  for (;;) {
    const rows = (await closedRows(cluster)).filter(
      ({ node, row }) =>
        !used.has(`${node}:${row.id}`) &&
        targets.has(row.destination.ip) &&
        row.destination.port === port &&
        (row.reporter === "source" ? row.pod === `${from.namespace}/${from.name}` : row.source.ip === from.ipv4),
    );
    if (rows.length >= want || Date.now() > deadline) {
      for (const { node, row } of rows) used.add(`${node}:${row.id}`);
      return rows;
    }
    await sleep(100);
  }
}

const shortId = (principal: string) => principal || "(no identity: plaintext)";

/** Two lines for one call: identities and tls, then bytes and which agents saw it. */
export function describeRows(from: SimPod, to: string, rows: SeenRow[]): string[] {
  const src = rows.find((r) => r.row.reporter === "source")?.row;
  const dst = rows.find((r) => r.row.reporter === "destination")?.row;
  const any = src ?? dst;
  if (!any) return ["no connection recorded by any agent"];
  // The source's agent knows the bytes as its app sent them; the destination's agent is the fallback.
  const bytes = src ?? dst;
  const tls = [...new Set(rows.map((r) => r.row.tls))].join("/");
  const principal = (side: "source" | "destination") =>
    shortId((side === "source" ? (dst ?? src) : (src ?? dst))?.[side].principal ?? "");
  return [
    `${from.name} ${principal("source")} -> ${to} ${principal("destination")}  tls=${tls}`,
    `request ${formatBytes(bytes?.sent ?? 0)}, response ${formatBytes(bytes?.received ?? 0)}; ` +
      `recorded by ${rows.map((r) => `agent ${r.node} (${r.row.reporter})`).join(" and ")}`,
  ];
}

/** One sample line of the Prometheus text format: name, labels, value. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1] as string] = l[2] as string;
    out.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return out;
}

/** e.g. `client 2 x avg 3.1 ms; server 1 x avg 2.4 ms` from the handshake histogram. */
export function handshakeSummary(samples: Sample[]): string {
  const parts = ["client", "server"].map((role) => {
    const pick = (suffix: string) =>
      samples.find((s) => s.name === `ambit_tls_handshake_duration_seconds_${suffix}` && s.labels.role === role)
        ?.value ?? 0;
    const count = pick("count");
    return count === 0 ? `${role} none` : `${role} ${count} x avg ${((pick("sum") / count) * 1000).toFixed(1)} ms`;
  });
  return parts.join("; ");
}

export function refusals(samples: Sample[]): string[] {
  return samples
    .filter((s) => s.name === "ambit_connections_refused_total" && s.value > 0)
    .map((s) => `${s.labels.pod} ${s.labels.direction} ${s.labels.reason}: ${s.value}`);
}

export async function nodeMetrics(cluster: SimCluster, node: SimNode): Promise<Sample[]> {
  return parseMetrics(await getIn(cluster, node.netnsName, `http://127.0.0.1:${PORTS.metrics}/metrics`));
}
