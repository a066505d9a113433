/** One line per connection for `ambit tap`, in the spirit of `linkerd viz tap`. Pure. */
import type { ConnectionRow } from "../admin/connection-tracker.js";

const who = (principal: string) => principal || "unknown";

export function formatBytes(n: number): string {
  if (n < 1024) return `${n}B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(1)}${units[i]}`;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  return `${Math.floor(ms / 60_000)}m${Math.round((ms % 60_000) / 1000)}s`;
}

/**
 * e.g. `end  src=default/a (spiffe://cluster.local/ns/default/sa/a) dst=default/b 10.1.2.3:8080
 * (spiffe://cluster.local/ns/default/sa/b) tls=true sent=12B recv=40B duration=3ms reporter=source`.
 * The source side names the pod when this agent served it (reporter=source), else the workload.
 */
export function formatConnection(c: ConnectionRow): string {
  const src = c.reporter === "source" ? c.pod : `${c.source.namespace}/${c.source.workload}`;
  const dst = c.reporter === "destination" ? c.pod : `${c.destination.namespace}/${c.destination.workload}`;
  const bytes =
    c.state === "closed" ? `sent=${formatBytes(c.sent ?? 0)} recv=${formatBytes(c.received ?? 0)}` : "sent=- recv=-";
  return [
    c.state === "open" ? "open" : "end ",
    `src=${src} (${who(c.source.principal)})`,
    `dst=${dst} ${c.destination.ip}:${c.destination.port} (${who(c.destination.principal)})`,
    `tls=${c.tls}`,
    bytes,
    `duration=${formatDuration(c.durationMs)}`,
    `reporter=${c.reporter}`,
    ...(c.error ? [`error=${JSON.stringify(c.error)}`] : []),
  ].join(" ");
}

/**
 * For --follow: which rows of a new snapshot were not printed yet. A connection is printed once when first seen
 * open and once when it ends; `seen` remembers "id:state" and is pruned to what the snapshot still holds.
 */
export function newRows(rows: ConnectionRow[], seen: Set<string>): ConnectionRow[] {
  const fresh = rows.filter((r) => !seen.has(`${r.id}:${r.state}`));
  const current = new Set(rows.map((r) => `${r.id}:${r.state}`));
  for (const k of [...seen]) if (!current.has(k)) seen.delete(k);
  for (const k of current) seen.add(k);
  return fresh;
}
