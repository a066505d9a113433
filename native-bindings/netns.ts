import { CLONE_NEWNET, close, O_CLOEXEC, O_RDONLY, open, setns } from "./libc.js";

/**
 * The agent's own network namespace, opened once. setns() changes only the calling thread, and all of ambit's
 * namespace work happens synchronously on Node's main thread, so /proc/self/ns/net (the main thread's) is home.
 */
let homeFd: number | undefined;

function home(): number {
  homeFd ??= open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  return homeFd;
}

/** The main thread could not return to its own namespace: nothing it does afterwards can be trusted. */
export class NetnsReturnError extends Error {
  readonly code = "netns_return_failed";
}

/**
 * Run `fn` synchronously inside the network namespace at `path` (/var/run/netns/NAME or /proc/PID/ns/net) and
 * always come back, even when `fn` throws. Sockets created inside keep that namespace for their whole life.
 */
export function inNetns<T>(path: string, fn: () => T): T {
  const self = home();
  const target = open(path, O_RDONLY | O_CLOEXEC);
  try {
    setns(target, CLONE_NEWNET, path);
  } finally {
    close(target);
  }
  let result: T;
  try {
    result = fn();
  } catch (err) {
    returnHome(self, path);
    throw err;
  }
  returnHome(self, path);
  return result;
}

function returnHome(self: number, from: string): void {
  try {
    setns(self, CLONE_NEWNET, "returning to the agent's namespace");
  } catch (cause) {
    // Continuing would open the agent's sockets in a pod's namespace; the caller must stop the process.
    throw new NetnsReturnError(`could not return from ${from} to the agent's network namespace`, { cause });
  }
}
