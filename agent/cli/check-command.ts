/**
 * `ambit check <namespace/pod> --from <spiffe-id|ip> --port N`: what the pod's AuthorizationPolicies decide for a
 * connection that has not been made, asked of the running agent (its admin server), which decides it the way its
 * data path does. Operators debug policy without sending traffic.
 */
import { parseArgs } from "node:util";
import { AmbitError } from "../errors.js";
import type { CheckAnswer } from "../policy/explain.js";
import { DEFAULT_ADMIN, getAdminJson } from "./admin-client.js";

const REASONS: Record<string, string> = {
  no_policy: "no AuthorizationPolicy selects the pod",
  allow_matched: "an ALLOW rule matched",
  allow_unmatched: "ALLOW policies select the pod and none of their rules matched",
  deny_matched: "a DENY rule matched",
  custom_unsupported: "a CUSTOM policy selects the pod (ambit has no external authorizer)",
  invalid_policy: "a policy ambit cannot read selects the pod (it denies)",
};

/** The answer for people; pure. */
export function formatCheck(a: CheckAnswer): string {
  const c = a.connection;
  const caller = c.principal ? `spiffe://${c.principal}` : "plaintext";
  const from = `${caller}${c.sourceIp ? ` from ${c.sourceIp}` : ""}`;
  const d = a.decision;
  const decided = d.policy ? ` by ${d.policy}${d.rule !== undefined ? ` rules[${d.rule}]` : ""}` : "";
  const lines = [
    `${a.pod}:${c.destinationPort} <- ${from}: ${d.verdict.toUpperCase()}${decided}`,
    `  why: ${REASONS[d.reason] ?? d.reason}`,
  ];
  if (a.policies.length === 0) lines.push("  policies selecting the pod: none");
  else lines.push("  policies selecting the pod:");
  for (const p of a.policies) {
    lines.push(`    ${p.action} ${p.policy}`);
    for (const w of p.warnings) lines.push(`      warning: ${w}`);
  }
  return `${lines.join("\n")}\n`;
}

export async function checkCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      from: { type: "string" },
      port: { type: "string" },
      "source-ip": { type: "string" },
      json: { type: "boolean", default: false },
      admin: { type: "string", default: process.env.AMBIT_ADMIN_ADDRESS ?? DEFAULT_ADMIN },
    },
  });
  const pod = positionals[0];
  if (positionals.length !== 1 || !pod?.includes("/") || !values.from || !values.port) {
    throw new AmbitError(
      "check_usage",
      "usage: ambit check <namespace/pod> --from <spiffe-id|ip> --port N [--source-ip IP] [--json] [--admin HOST:PORT]",
    );
  }
  const query = new URLSearchParams({ pod, from: values.from, port: values.port });
  if (values["source-ip"]) query.set("source-ip", values["source-ip"]);
  const answer = await getAdminJson<CheckAnswer>(values.admin as string, `/authorization/check?${query}`);
  process.stdout.write(values.json ? `${JSON.stringify(answer, null, 2)}\n` : formatCheck(answer));
}
