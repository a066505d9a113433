import { TEST_WORKERS } from "./data-path.js";

/**
 * Flags of `ambit agent` for a local agent process in a simulated cluster: embedded CA in a shared directory (start
 * agents one after another: the first creates the root), servers on free loopback ports, quiet logs.
 */
export function localAgentArgs(node: string, manifests: string, caDir: string, workers = TEST_WORKERS): string[] {
  return [
    "agent",
    "--node",
    node,
    "--manifests",
    manifests,
    "--ca-dir",
    caDir,
    "--metrics",
    "127.0.0.1:0",
    "--admin",
    "127.0.0.1:0",
    "--ready",
    "127.0.0.1:0",
    "--log-level",
    "warn",
    "--workers",
    String(workers),
  ];
}
