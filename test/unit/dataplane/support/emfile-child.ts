/**
 * A child process for the EMFILE test: a relay on its main thread's reactor, with RLIMIT_NOFILE lowered so that
 * only `free` more descriptors can be opened. Lowering the limit is process-wide, hence a process of its own.
 * Each pause is reported as the mesh worker reports it (logExhaustion, a 10 s throttle) to a capturing logger.
 * Messages: {start, targetPort, free, shared} -> {port}; "stats" -> {stats, cpuMicros, logged}; "hold" takes one more
 * descriptor (an eventfd) -> {held}; "stop" -> exits. `shared`: the listener is watched as a worker pool's shared
 * listening socket is (EPOLLEXCLUSIVE, not owned: this child closes it after the listener).
 */
import { readdirSync } from "node:fs";
import { logExhaustion } from "../../../../agent/dataplane/fd-exhaustion.js";
import { Listener } from "../../../../agent/dataplane/listener.js";
import { Reactor } from "../../../../agent/dataplane/reactor.js";
import { WorkerCounters } from "../../../../agent/dataplane/shared-counters.js";
import { TcpRelay } from "../../../../agent/dataplane/tcp-relay.js";
import { LogThrottle } from "../../../../agent/log-throttle.js";
import { closeFd, eventfd, getrlimit, RLIMIT_NOFILE, setrlimit } from "../../../../native-bindings/io.js";
import { openListenerFd } from "../../../../native-bindings/sockets.js";
import { capturingLogger } from "../../../support/log-lines.js";
import { listenerPort } from "./relay.js";

type Message = { start: true; targetPort: number; free: number; shared: boolean } | "stats" | "hold" | "stop";

/** The lowest limit below which exactly `free` descriptor numbers are unused (new fds take the lowest free one). */
function limitLeaving(free: number): number {
  const open = new Set(readdirSync("/proc/self/fd").map(Number));
  let unused = 0;
  for (let n = 0; ; n++) {
    if (!open.has(n)) unused++;
    if (unused === free) return n + 1;
  }
}

const reactor = new Reactor();
const counters = WorkerCounters.standalone();
let relay: TcpRelay | undefined;
let listener: Listener | undefined;
let sharedFd: number | undefined;
const held: number[] = [];
const throttle = new LogThrottle();
const { logger, lines } = capturingLogger("info");

process.on("message", async (message: Message) => {
  if (message === "stats") {
    const usage = process.cpuUsage();
    process.send?.({
      relay: relay?.stats(),
      listener: listener?.stats(),
      live: relay?.live,
      cpuMicros: usage.user + usage.system,
      logged: lines.filter((l) => l.where === "accept").map((l) => ({ code: l.code, suppressed: l.suppressed })),
    });
  } else if (message === "hold") {
    held.push(eventfd());
    process.send?.({ held: held.length });
  } else if (message === "stop") {
    for (const fd of held) closeFd(fd);
    listener?.close();
    if (sharedFd !== undefined) closeFd(sharedFd);
    relay?.closeAll();
    await reactor.close();
    process.disconnect();
  } else {
    const fd = openListenerFd({ address: "127.0.0.1", port: 0 });
    const served = new TcpRelay(reactor, {
      target: { address: "127.0.0.1", port: message.targetPort },
      connectTimeoutMs: 5000,
      counters,
    });
    relay = served;
    listener = new Listener(reactor, fd, counters, (client) => served.relay(client), {
      shared: message.shared,
      onExhausted: (errno) => logExhaustion(throttle, logger, "accept", errno),
    });
    if (message.shared) sharedFd = fd;
    const { hard } = getrlimit(RLIMIT_NOFILE);
    setrlimit(RLIMIT_NOFILE, { soft: BigInt(limitLeaving(message.free)), hard });
    process.send?.({ port: listenerPort(fd) });
  }
});
