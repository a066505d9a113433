import { createLogger } from "../log.js";
import { parseAgentConfig } from "../node/config.js";

/** `ambit agent`: run the node agent until SIGINT/SIGTERM. */
export async function agentCommand(argv: string[]): Promise<void> {
  const config = parseAgentConfig(argv);
  const log = createLogger({ level: config.logLevel });
  // Loaded here, not at the top: the agent's modules (the data plane, the redirector) load native libraries through
  // koffi (libc, libnftables) as they are imported, and the other commands (`ambit tap`, `certs`, `ca`) need none.
  const { startAgent } = await import("../node/run-agent.js");
  const running = await startAgent(config, log);
  const stop = (signal: string) => {
    log.info({ signal }, "stopping: listeners close, pods' rules stay (their traffic is refused until restart)");
    void running.stop().then(() => process.exit(0));
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}
