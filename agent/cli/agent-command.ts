import { createLogger } from "../log.js";
import { parseAgentConfig } from "../node/config.js";

/**
 * `ambit agent`: run the node agent until SIGINT/SIGTERM. The first signal drains (--drain-seconds: the listeners
 * close, so a new agent beside this one takes the new connections; open ones are served meanwhile); a second one
 * stops at once. Either way the pods' rules stay.
 */
export async function agentCommand(argv: string[]): Promise<void> {
  const config = parseAgentConfig(argv);
  const log = createLogger({ level: config.logLevel });
  // Loaded here, not at the top: the agent's modules (the data plane, the redirector) load native libraries through
  // koffi (libc, libnftables) as they are imported, and the other commands (`ambit tap`, `certs`, `ca`) need none.
  const { startAgent } = await import("../node/run-agent.js");
  const running = await startAgent(config, log);
  let draining = false;
  const stop = (signal: NodeJS.Signals) => {
    if (draining) {
      log.warn({ signal }, "stopping now: the connections still open are reset; pods' rules stay");
      void running.stop().then(() => process.exit(0));
      return;
    }
    draining = true;
    log.info(
      { signal, drainSeconds: config.drainSeconds },
      "draining: listeners closed (a new agent's take new connections), open ones served until they end or the drain period does; pods' rules stay",
    );
    void running.drain((config.drainSeconds ?? 0) * 1000).then(({ left, seconds }) => {
      const outcome = left === 0 ? "drained" : "timeout";
      log.info(
        { outcome, left, seconds },
        left === 0 ? "drained; exiting" : "drain period over; the connections left were reset, exiting",
      );
      process.exit(0);
    });
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
