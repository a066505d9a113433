/**
 * The only way agent code enters a pod's network namespace. setns() switches the calling thread (Node's main thread,
 * or a data-plane worker making a pod's socket); if the thread cannot return to the agent's own namespace
 * (NetnsReturnError), every socket it opens afterwards (listeners, HBONE dials, admin servers) would open in a
 * pod's namespace. Nothing it does can be trusted then, so the process logs why and exits at once, on every path:
 * the pods' rules stay (their traffic is refused, never leaked), and the restarted agent re-enrolls them.
 */
import { exitProcessNow } from "../native-bindings/libc.js";
import { inNetns, inNetnsFd, NetnsReturnError } from "../native-bindings/netns.js";
import { type MarkedConnectOptions, markedSocketInNetnsFd } from "../native-bindings/sockets.js";
import type { LineLog } from "./log.js";

/** Exit status of an agent that lost its own network namespace. */
export const EXIT_NETNS_LOST = 70;

/**
 * A network namespace the agent holds open (agent/netns/): `fd` stays valid until the holder releases it, and reading
 * `fd` afterwards throws rather than hand out a number the process may since have given to another file.
 */
export interface HeldNetnsRef {
  readonly fd: number;
  /** Names the namespace in logs and errors: the pod, the inode, where it was found. */
  readonly description: string;
}

/** Run `fn` inside the namespace at `path` and come back, or stop the process if coming back fails. */
export function inPodNetns<T>(path: string, fn: () => T, log: LineLog): T {
  try {
    return inNetns(path, fn);
  } catch (err) {
    exitIfNetnsLost(err, log, path);
    throw err;
  }
}

/** inPodNetns for a namespace held open by descriptor. */
export function inPodNetnsFd<T>(netns: HeldNetnsRef, fn: () => T, log: LineLog): T {
  try {
    return inNetnsFd(netns.fd, fn, netns.description);
  } catch (err) {
    exitIfNetnsLost(err, log, netns.description);
    throw err;
  }
}

/**
 * A marked, non-blocking, unconnected socket made inside the held namespace, for a data-plane worker to connect on
 * its own loop. A worker that cannot return hands the end of the process to the main thread (endProcessWith).
 */
export function socketInPodFd(netns: HeldNetnsRef, options: MarkedConnectOptions, log: LineLog): number {
  try {
    return markedSocketInNetnsFd(netns.fd, options, netns.description);
  } catch (err) {
    exitIfNetnsLost(err, log, netns.description);
    throw err;
  }
}

function exitIfNetnsLost(err: unknown, log: LineLog, path: string): void {
  if (!(err instanceof NetnsReturnError)) return;
  log.fatal(
    { err, netns: path, exitCode: EXIT_NETNS_LOST },
    "could not return to the agent's own network namespace; exiting now: pods keep their rules (traffic refused) until the restarted agent re-enrolls them",
  );
  endProcess(EXIT_NETNS_LOST);
}

let endProcess = (status: number): never => exitProcessNow(status);

/**
 * How a data-plane worker thread ends the process: it cannot itself (process.exit() in a worker ends the thread, and
 * Node aborts on the thread's open uv handle), so it hands the end to the main thread and stops running code.
 */
export function endProcessWith(end: (status: number) => never): void {
  endProcess = end;
}
