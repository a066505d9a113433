/**
 * Processes inside simulated pods' namespaces, and the descriptors this process holds on namespaces: what a /proc
 * scan sees of a pod (`ip netns add` namespaces are bind mounts, invisible to it until a process is inside).
 */
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { readdirSync, readlinkSync, statSync } from "node:fs";
import type { SimCluster } from "../../../agent/sim/index.js";
import { waitFor } from "../../bench/support.js";

/** Inode of the namespace at a path (what /proc/PID/ns/net links name as net:[INODE]). */
export function inodeOf(path: string): number {
  return statSync(path).ino;
}

/** `sleep infinity` inside the namespace, once the kernel shows it there (ip netns exec first runs outside). */
export async function sleeperIn(cluster: SimCluster, netnsName: string): Promise<ChildProcess> {
  const child = cluster.spawnIn(netnsName, "sleep", ["infinity"]);
  const want = `net:[${inodeOf(`/var/run/netns/${netnsName}`)}]`;
  await waitFor(`a process in ${netnsName}`, async () => {
    try {
      return readlinkSync(`/proc/${child.pid}/ns/net`) === want;
    } catch {
      return false;
    }
  });
  return child;
}

/** Kills a process started with sleeperIn and waits until it is gone. */
export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGKILL");
  await exited;
}

/**
 * How many of this process's descriptors refer to the namespace `inode`: by stat, since the link text of a
 * descriptor opened through a bind mount (/var/run/netns/NAME) is that path, not net:[INODE].
 */
export function fdsOn(inode: number): number {
  const nsfs = statSync("/proc/self/ns/net").dev;
  let n = 0;
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      const st = statSync(`/proc/self/fd/${fd}`);
      if (st.ino === inode && st.dev === nsfs) n++;
    } catch {
      // Closed since the listing (another test's socket).
    }
  }
  return n;
}
