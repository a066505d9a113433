/**
 * `ambit agent` with one fault a test cannot cause from outside: once the agent is up, the descriptor of its own
 * network namespace (opened on the first enrollment) is replaced by /dev/null, so the next setns() back home fails
 * as it would if that descriptor were ever lost. Takes the same flags as `ambit agent`; prints one JSON line
 * `{"msg":"sabotaged"}` when the fault is in place. Test tooling only: the libc call is declared here, not in
 * native-bindings/, because the agent never needs it.
 */
import { readdirSync, readlinkSync } from "node:fs";
import koffi from "koffi";
import { createLogger } from "../../../agent/log.js";
import { parseAgentConfig } from "../../../agent/node/config.js";
import { startAgent } from "../../../agent/node/run-agent.js";
import { O_RDONLY, open } from "../../../native-bindings/libc.js";

// stdin is a pipe from the test: when the test process goes away (even killed), so does this one.
process.stdin.on("end", () => process.exit(1)).resume();

const config = parseAgentConfig(process.argv.slice(2));
await startAgent(config, createLogger({ level: config.logLevel }));

// Every thread's: the main thread's and each data-plane worker's.
const home = readlinkSync("/proc/self/ns/net");
const fds = readdirSync("/proc/self/fd")
  .map(Number)
  .filter((n) => {
    try {
      return readlinkSync(`/proc/self/fd/${n}`) === home;
    } catch {
      return false;
    }
  });
if (fds.length === 0) throw new Error("the agent holds no descriptor of its own namespace (no pod enrolled?)");
const dup2 = koffi.load("libc.so.6").func("int dup2(int oldfd, int newfd)");
for (const fd of fds) if (dup2(open("/dev/null", O_RDONLY), fd) !== fd) throw new Error("dup2 failed");
process.stdout.write(`${JSON.stringify({ msg: "sabotaged", fds })}\n`);
