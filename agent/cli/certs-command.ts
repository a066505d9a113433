/** `ambit certs`: the identities a running agent holds, their state and when their certificates expire. */
import { parseArgs } from "node:util";
import type { ConfigDump } from "../admin/facts.js";
import type { IdentitySnapshot } from "../identity/cert-manager.js";
import { DEFAULT_ADMIN, getAdminJson } from "./admin-client.js";
import { formatDuration } from "./tap-format.js";

/** One line per identity; pure. */
export function formatIdentity(s: IdentitySnapshot, now = Date.now()): string {
  const expiry = s.notAfter
    ? `expires=${s.notAfter} (in ${formatDuration(Date.parse(s.notAfter) - now)})`
    : "expires=- (no valid certificate)";
  return [
    s.spiffeId,
    `state=${s.state}`,
    expiry,
    `serial=${s.serial ?? "-"}`,
    `pods=${s.pods.join(",") || "-"}`,
    ...(s.lastError ? [`error=${JSON.stringify(s.lastError)}`] : []),
  ].join(" ");
}

export async function certsCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: { admin: { type: "string", default: process.env.AMBIT_ADMIN_ADDRESS ?? DEFAULT_ADMIN } },
  });
  const dump = await getAdminJson<ConfigDump>(values.admin as string, "/config_dump");
  if (dump.identities.length === 0) process.stdout.write("no identities (no meshed pods on this node)\n");
  for (const s of dump.identities) process.stdout.write(`${formatIdentity(s)}\n`);
}
