/**
 * `ambit tap` (alias `ambit connections`): live and recently closed connections of a running agent, one line each;
 * `--follow` keeps polling and prints connections as they open and end.
 */
import { parseArgs } from "node:util";
import type { ConnectionsSnapshot } from "../admin/connection-tracker.js";
import { ConfigError } from "../node/config.js";
import { DEFAULT_ADMIN, getAdminJson } from "./admin-client.js";
import { formatConnection, newRows } from "./tap-format.js";

export async function tapCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      admin: { type: "string", default: process.env.AMBIT_ADMIN_ADDRESS ?? DEFAULT_ADMIN },
      follow: { type: "boolean", short: "f", default: false },
      interval: { type: "string", default: "1000" },
    },
  });
  const admin = values.admin as string;
  const intervalMs = Number(values.interval);
  if (!Number.isFinite(intervalMs) || intervalMs < 100) throw new ConfigError("--interval: milliseconds >= 100");
  const seen = new Set<string>();
  const poll = async () => {
    const snap = await getAdminJson<ConnectionsSnapshot>(admin, "/connections");
    // Ended ones first, then what is still open: reads in time order within one poll.
    const rows = newRows([...snap.recent, ...snap.live], seen);
    if (rows.length > 0) process.stdout.write(`${rows.map(formatConnection).join("\n")}\n`);
  };
  await poll();
  if (!values.follow) return;
  let stopped = false;
  process.once("SIGINT", () => {
    stopped = true;
  });
  while (!stopped) {
    await new Promise((r) => setTimeout(r, intervalMs));
    await poll();
  }
}
