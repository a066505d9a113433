import { fstatSync, statSync } from "node:fs";
import { CLONE_NEWNET, closeFdQuietly, O_CLOEXEC, O_RDONLY, open, setns } from "./libc.js";

/**
 * The calling thread's own network namespace, opened once per thread (module state is per thread). setns() changes
 * only the calling thread, and every visit to a namespace is synchronous, so the namespace a thread is in when it
 * first asks is home: Node's main thread, and the data-plane workers it starts (a new thread starts in its
 * creator's namespace, and the main thread never starts one from inside a visit).
 */
let homeFd: number | undefined;

function home(): number {
  homeFd ??= openNetns("/proc/thread-self/ns/net");
  return homeFd;
}

/**
 * Opens the calling thread's home descriptor now, while the thread is known to be home (a data-plane worker at its
 * start), rather than on its first visit.
 */
export function holdHomeNetns(): void {
  home();
}

/** A thread could not return to its own namespace: nothing the process does afterwards can be trusted. */
export class NetnsReturnError extends Error {
  readonly code = "netns_return_failed";
}

/**
 * A descriptor of the namespace at `path` (/var/run/netns/NAME or /proc/PID/ns/net), for inNetnsFd. Holding it
 * keeps that namespace alive and names it for good, where a /proc/PID path names whatever namespace the process
 * holding that PID is in when the path is opened.
 */
export function openNetns(path: string): number {
  return open(path, O_RDONLY | O_CLOEXEC);
}

/** A namespace's identity: nsfs inode and device (what `ip netns identify` and lsns compare). */
export interface NetnsId {
  inode: number;
  dev: number;
}

/** The identity of the namespace an open descriptor or a path refers to (fstat/stat; Node's own calls suffice). */
export function netnsId(fdOrPath: number | string): NetnsId {
  const st = typeof fdOrPath === "number" ? fstatSync(fdOrPath) : statSync(fdOrPath);
  return { inode: st.ino, dev: st.dev };
}

/**
 * Run `fn` synchronously inside the network namespace open at `fd` and always come back, even when `fn` throws.
 * Sockets created inside keep that namespace for their whole life. `description` names the namespace in errors.
 */
export function inNetnsFd<T>(fd: number, fn: () => T, description = `network namespace fd ${fd}`): T {
  const self = home();
  setns(fd, CLONE_NEWNET, description);
  let result: T;
  try {
    result = fn();
  } catch (err) {
    returnHome(self, description);
    throw err;
  }
  returnHome(self, description);
  return result;
}

/**
 * inNetnsFd for the namespace at `path` (/var/run/netns/NAME or /proc/PID/ns/net), opened for this call only.
 * Closing it quietly: a close error must never take the place of a NetnsReturnError.
 */
export function inNetns<T>(path: string, fn: () => T): T {
  const target = openNetns(path);
  try {
    return inNetnsFd(target, fn, path);
  } finally {
    closeFdQuietly(target);
  }
}

function returnHome(self: number, from: string): void {
  try {
    setns(self, CLONE_NEWNET, "returning to the agent's namespace");
  } catch (cause) {
    // Continuing would open the agent's sockets in a pod's namespace; the caller must stop the process.
    throw new NetnsReturnError(`could not return from ${from} to the agent's network namespace`, { cause });
  }
}
