/**
 * The fd-taking namespace entries (agent/pod-netns.ts inPodNetnsFd, socketInPodFd) when the thread cannot come
 * back: enters the namespace at argv[2] once (which opens the agent's own namespace descriptor), replaces that
 * descriptor with /dev/null as lost-netns-agent.ts does, then enters again by descriptor, with `argv[3]` ("run" or
 * "socket"). The process must exit with EXIT_NETNS_LOST and a fatal line; it prints "survived" if it does not.
 */
import { readdirSync, readlinkSync } from "node:fs";
import koffi from "koffi";
import { createLogger } from "../../../agent/log.js";
import { inPodNetnsFd, socketInPodFd } from "../../../agent/pod-netns.js";
import { O_RDONLY, open } from "../../../native-bindings/libc.js";
import { openNetns } from "../../../native-bindings/netns.js";

// stdin is a pipe from the test: when the test process goes away (even killed), so does this one.
process.stdin.on("end", () => process.exit(1)).resume();

const [path = "", mode = "run"] = process.argv.slice(2);
const log = createLogger({ level: "info" });
const netns = { fd: openNetns(path), description: `test namespace ${path}` };
inPodNetnsFd(netns, () => undefined, log);

const home = readlinkSync("/proc/self/ns/net");
const fd = readdirSync("/proc/self/fd")
  .map(Number)
  .find((n) => {
    try {
      return readlinkSync(`/proc/self/fd/${n}`) === home;
    } catch {
      return false;
    }
  });
if (fd === undefined) throw new Error("no descriptor of the process's own namespace");
const dup2 = koffi.load("libc.so.6").func("int dup2(int oldfd, int newfd)");
if (dup2(open("/dev/null", O_RDONLY), fd) !== fd) throw new Error("dup2 failed");

if (mode === "socket") socketInPodFd(netns, { address: "127.0.0.1", port: 1, mark: 1 }, log);
else inPodNetnsFd(netns, () => undefined, log);
process.stdout.write(`${JSON.stringify({ msg: "survived" })}\n`);
process.exit(0);
