#!/usr/bin/env node
import { caCommand } from "./ca/ca-command.js";
import { agentCommand } from "./cli/agent-command.js";
import { certsCommand } from "./cli/certs-command.js";
import { checkCommand } from "./cli/check-command.js";
import { cniInstallCommand, cniUninstallCommand } from "./cli/cni-command.js";
import { tapCommand } from "./cli/tap-command.js";
/**
 * ambit's command line: `ambit agent` (the node agent), `ambit ca` (the mesh CA server), and the operator
 * commands that read a running agent's admin server.
 */
import { AmbitError } from "./errors.js";

const commands: Record<string, { run: (argv: string[]) => Promise<void>; help: string }> = {
  agent: { run: agentCommand, help: "run the node agent (redirection, HBONE proxy, identities)" },
  ca: { run: caCommand, help: "run the mesh CA server" },
  tap: { run: tapCommand, help: "show a running agent's live and recent connections (--follow, --admin)" },
  connections: { run: tapCommand, help: "alias of tap" },
  certs: { run: certsCommand, help: "list a running agent's identities and certificate expiry (--admin)" },
  check: {
    run: checkCommand,
    help: "what AuthorizationPolicy decides for a connection to a pod (--from, --port, --admin)",
  },
  "cni-install": {
    run: cniInstallCommand,
    help: "put ambit-cni on this node: plugin binary, CNI config entry, fallback credentials (--watch keeps them)",
  },
  "cni-uninstall": {
    run: cniUninstallCommand,
    help: "take ambit-cni off this node (config entry, binary, credentials)",
  },
};

function usage(): string {
  return [
    "usage: ambit <command> [flags]",
    "",
    ...Object.entries(commands).map(([n, c]) => `  ${n.padEnd(15)}${c.help}`),
  ].join("\n");
}

const [name, ...argv] = process.argv.slice(2);
const command = name ? commands[name] : undefined;
if (!command) {
  process.stderr.write(`${usage()}\n`);
  process.exit(name === "help" || name === "--help" ? 0 : 2);
}
command.run(argv).catch((err: unknown) => {
  const code = err instanceof AmbitError ? ` [${err.code}]` : "";
  process.stderr.write(`ambit ${name}: ${err instanceof Error ? err.message : String(err)}${code}\n`);
  if (err instanceof Error && err.cause)
    process.stderr.write(`  cause: ${String((err.cause as Error).message ?? err.cause)}\n`);
  process.exit(1);
});
