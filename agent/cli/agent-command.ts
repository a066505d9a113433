import { createLogger } from "../log.js";
import { DRAIN_MARGIN_SECONDS, parseAgentConfig } from "../node/config.js";

/**
 * How long the metrics server stays up once a drain's outcome is counted (ambit_drains_total), so that a scrape
 * can read it: within the margin the drain period leaves before the kubelet's SIGKILL, with 1 s to spare for the
 * exit. Only a scrape in that window reads it (1 in 7 at a 15 s interval): the log line is the record of every
 * drain; ambit_draining says, the whole drain long, that one is under way.
 */
const DRAIN_REPORT_MS = (DRAIN_MARGIN_SECONDS - 1) * 1000;

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
    void running.drain((config.drainSeconds ?? 0) * 1000, DRAIN_REPORT_MS).then(({ outcome, left, seconds }) => {
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
