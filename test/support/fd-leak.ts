import { readdirSync, readlinkSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import type { ExecutionContext } from "ava";

/** The fds open in this process now, with what each points at (socket:[...], anon_inode:[eventpoll], ...). */
export function openFds(): Map<number, string> {
  const fds = new Map<number, string>();
  // readdirSync's own directory fd shows up in the listing and is closed by the time we readlink it: skip it.
  for (const name of readdirSync("/proc/self/fd")) {
    try {
      fds.set(Number(name), readlinkSync(`/proc/self/fd/${name}`));
    } catch {
      // Closed between the listing and the readlink (the listing's own fd, or a socket Node was closing).
    }
  }
  return fds;
}

export interface LeakBaseline {
  fds: Map<number, string>;
}

/** Snapshot before a data-path test; pass it to assertNoLeak at the end. */
export function fdBaseline(): LeakBaseline {
  return { fds: openFds() };
}

function difference(before: Map<number, string>, after: Map<number, string>): string[] {
  const diff: string[] = [];
  for (const [fd, target] of after) if (before.get(fd) !== target) diff.push(`+${fd} ${target}`);
  for (const [fd, target] of before) if (after.get(fd) !== target) diff.push(`-${fd} ${target}`);
  return diff;
}

/**
 * Asserts that the process has exactly the fds of `baseline` again and that `live()` (a live-connection count the
 * code under test exposes) is 0, waiting up to `settleMs` for sockets being closed (Node closes its own on a later
 * tick, the peer's FIN may still be in flight).
 */
export async function assertNoLeak(
  t: ExecutionContext,
  baseline: LeakBaseline,
  live: () => number | Promise<number> = () => 0,
  settleMs = 2000,
): Promise<void> {
  const deadline = Date.now() + settleMs;
  for (;;) {
    const diff = difference(baseline.fds, openFds());
    const count = await live();
    if ((diff.length === 0 && count === 0) || Date.now() > deadline) {
      t.deepEqual(diff, [], "fds differ from the baseline");
      t.is(count, 0, "live connections left");
      return;
    }
    await sleep(20);
  }
}
