/**
 * Pod -> its network namespace, held open by descriptor while the pod is enrolled: every later entry (rules,
 * listeners, connections from the pod) goes through that descriptor, never by reopening a /proc/PID path, which
 * costs an open/close each time and may by then name another process's namespace.
 *
 * resolve() answers from what is held when it still stands (the process it was found through is still in it and it
 * still holds one of the pod's IPs), and otherwise resolves again: by the record's path when it gives one, by a
 * /proc scan (discovery.ts) when it does not. A pod whose sandbox restarted (new namespace, same pod), or whose
 * UID or IPs changed, gets the new namespace and the old descriptor is closed. While a held namespace stands no
 * scan runs for the pod, so a second namespace that copies its IP later is not looked for. Failures are results
 * with a reason from a closed set (errors.ts), never exceptions: the caller counts them
 * (ambit_pods_not_enrolled{reason}) and tries again later.
 */
import { closeFdQuietly } from "../../native-bindings/libc.js";
import { netnsId, openNetns } from "../../native-bindings/netns.js";
import { type Logger, silentLogger } from "../log.js";
import { LogThrottle } from "../log-throttle.js";
import { type DiscoveryResult, NetnsDiscovery, type ScanStats } from "./discovery.js";
import { NetnsResolveError, NOT_ENROLLED_REASONS, type NotEnrolledReason } from "./errors.js";
import { HeldNetns } from "./held-netns.js";
import type { ClaimantEvidence } from "./namespace-match.js";
import { wantedIps } from "./namespace-match.js";

/** What the registry needs of a pod record. */
export interface PodNetnsRequest {
  /** "namespace/name". */
  key: string;
  uid: string;
  /** status.podIPs, any textual form. */
  ips: readonly string[];
  /** Path of the pod's namespace when the record gives one (sim, local mode): opened as is, no scan. */
  netns?: string;
}

export type NetnsResolution =
  /** `replaced`: a namespace held for this pod before was another one (now closed); the pod must be enrolled anew. */
  | { ok: true; netns: HeldNetns; replaced: boolean }
  | { ok: false; reason: NotEnrolledReason; error: NetnsResolveError };

export interface NetnsRegistryOptions {
  /** Shared discovery (its caches serve every pod); one of its own is made from the options below otherwise. */
  discovery?: NetnsDiscovery;
  procRoot?: string;
  cacheTtlMs?: number;
  logger?: Logger;
  /** One failure line per pod and reason per this many ms (a pod retried every second must not flood the log). */
  logIntervalMs?: number;
}

interface Candidate {
  fd: number;
  inode: number;
  source: "scan" | "path";
  openedAt: string;
  pid?: number;
}

export class NetnsRegistry {
  readonly #held = new Map<string, HeldNetns>();
  readonly #failing = new Map<string, NotEnrolledReason>();
  readonly #discovery: NetnsDiscovery;
  readonly #log: Logger;
  readonly #throttle: LogThrottle;

  constructor(options: NetnsRegistryOptions = {}) {
    this.#log = options.logger ?? silentLogger;
    this.#discovery =
      options.discovery ??
      new NetnsDiscovery({ procRoot: options.procRoot, cacheTtlMs: options.cacheTtlMs, logger: this.#log });
    this.#throttle = new LogThrottle({ intervalMs: options.logIntervalMs ?? 30_000 });
  }

  /** The pod's namespace, held open until release(); or why there is none (the pod then holds nothing). */
  resolve(pod: PodNetnsRequest): NetnsResolution {
    const result = pod.netns ? this.#byPath(pod, pod.netns) : this.#byScan(pod);
    if (result.ok) this.#failing.delete(pod.key);
    else this.#failing.set(pod.key, result.reason);
    return result;
  }

  /** The namespace held for `podKey`, if any. */
  get(podKey: string): HeldNetns | undefined {
    return this.#held.get(podKey);
  }

  /**
   * Closes the pod's namespace descriptor (exactly once) and forgets the pod, its last failure included: call it when
   * the pod is unenrolled or deleted, whether or not it was ever resolved. False when nothing was held.
   */
  release(podKey: string): boolean {
    this.#failing.delete(podKey);
    const held = this.#held.get(podKey);
    if (!held) return false;
    this.#held.delete(podKey);
    held.close();
    this.#log.debug({ pod: podKey, netns: held.inode }, "pod unenrolled; its network namespace descriptor is closed");
    return true;
  }

  /** release() for every pod (agent shutdown). */
  releaseAll(): void {
    for (const key of [...this.#held.keys()]) this.release(key);
    this.#failing.clear();
  }

  /** Pods whose last resolve failed, by reason (every reason present): the ambit_pods_not_enrolled gauge. */
  notEnrolled(): Record<NotEnrolledReason, number> {
    const counts = Object.fromEntries(NOT_ENROLLED_REASONS.map((r) => [r, 0])) as Record<NotEnrolledReason, number>;
    for (const reason of this.#failing.values()) counts[reason]++;
    return counts;
  }

  get size(): number {
    return this.#held.size;
  }

  #byPath(pod: PodNetnsRequest, path: string): NetnsResolution {
    const ips = wantedIps(pod.ips);
    const held = this.#held.get(pod.key);
    if (held?.source === "path" && held.openedAt === path && held.podUid === pod.uid && this.#pathNames(path, held)) {
      held.refresh(ips);
      return { ok: true, netns: held, replaced: false };
    }
    let fd: number;
    try {
      fd = openNetns(path);
    } catch (cause) {
      const missing = (cause as { code?: unknown }).code === "ENOENT";
      return this.#fail(pod, missing ? "netns_not_found" : "netns_unreadable", `cannot open ${path}`, { cause });
    }
    const id = netnsId(fd);
    if (id.dev !== netnsId("/proc/self/ns/net").dev) {
      closeFdQuietly(fd);
      return this.#fail(pod, "netns_unreadable", `${path} is not a namespace file`);
    }
    if (this.#discovery.skipped().has(id.inode)) {
      closeFdQuietly(fd);
      return this.#fail(pod, "netns_host", `${path} is the host's or the agent's own network namespace`);
    }
    return this.#adopt(pod, ips, { fd, inode: id.inode, source: "path", openedAt: path });
  }

  #byScan(pod: PodNetnsRequest): NetnsResolution {
    const ips = wantedIps(pod.ips);
    if (ips.length === 0) {
      return this.#fail(pod, "pod_ip_missing", `no pod IP to look for (record lists ${JSON.stringify(pod.ips)})`);
    }
    const held = this.#held.get(pod.key);
    if (held?.source === "scan" && held.podUid === pod.uid && sameSet(held.ips, ips) && this.#stillThere(held)) {
      return { ok: true, netns: held, replaced: false };
    }
    const found = this.#discovery.find(ips, pod.uid);
    if (found.kind !== "found") return this.#failScan(pod, found);
    if (found.ignored.length > 0) {
      this.#log.warn(
        { pod: pod.key, uid: pod.uid, netns: found.netns.inode, ignored: claimantFields(found.ignored) },
        "other network namespaces also hold the pod's IPs but their processes belong to other pods; ignoring them",
      );
    }
    const { fd, inode, pid } = found.netns;
    return this.#adopt(pod, ips, { fd, inode, pid, source: "scan", openedAt: `/proc/${pid}/ns/net` }, found.stats);
  }

  /** A namespace found for the pod becomes the held one; what was held before for the pod is closed. */
  #adopt(pod: PodNetnsRequest, ips: string[], found: Candidate, stats?: ScanStats): NetnsResolution {
    const held = this.#held.get(pod.key);
    if (held && held.inode === found.inode && held.podUid === pod.uid) {
      // Same namespace, still open through `held` (a held descriptor keeps its inode from being reused).
      closeFdQuietly(found.fd);
      held.refresh(ips, found.pid);
      return { ok: true, netns: held, replaced: false };
    }
    const next = new HeldNetns({ podKey: pod.key, podUid: pod.uid, ips, ...found });
    this.#held.set(pod.key, next);
    const fields = { pod: pod.key, uid: pod.uid, netns: found.inode, via: found.openedAt, ips: pod.ips, scan: stats };
    if (held) {
      held.close();
      this.#log.info(
        { ...fields, previous: held.inode, previousUid: held.podUid },
        "pod's network namespace changed (sandbox restarted or pod recreated); holding the new one, the old descriptor is closed",
      );
    } else {
      this.#log.info(fields, "pod's network namespace found and held open");
    }
    return { ok: true, netns: next, replaced: held !== undefined };
  }

  #failScan(pod: PodNetnsRequest, found: Exclude<DiscoveryResult, { kind: "found" }>): NetnsResolution {
    const list = pod.ips.join(", ");
    switch (found.kind) {
      case "not_found":
        if (found.stats.unreadableNamespaces > 0) {
          const n = found.stats.unreadableNamespaces;
          return this.#fail(pod, "netns_unreadable", `no namespace read holds ${list}, and ${n} could not be read`, {
            scan: found.stats,
          });
        }
        return this.#fail(pod, "netns_not_found", `no network namespace with a process in it holds ${list}`, {
          scan: found.stats,
        });
      case "ambiguous":
        return this.#fail(pod, "netns_ambiguous", `${found.claimants.length} network namespaces hold ${list}`, {
          scan: found.stats,
          claimants: claimantFields(found.claimants),
        });
      case "other_pod":
        return this.#fail(pod, "netns_other_pod", `only namespaces of other pods (by cgroup) hold ${list}`, {
          scan: found.stats,
          claimants: claimantFields(found.claimants),
        });
      case "unreadable":
        return this.#fail(pod, "netns_unreadable", "cannot list /proc", { cause: found.error });
    }
  }

  /**
   * A failed resolve: whatever was held for the pod is closed (its namespace is gone or no longer the pod's), the
   * reason is recorded for the gauge, and one line per pod and reason per interval says what failed and what next.
   */
  #fail(
    pod: PodNetnsRequest,
    reason: NotEnrolledReason,
    message: string,
    details: { cause?: unknown; scan?: ScanStats; claimants?: unknown } = {},
  ): NetnsResolution {
    const error = new NetnsResolveError(reason, pod.key, message, { cause: details.cause });
    const held = this.#held.get(pod.key);
    if (held) {
      this.#held.delete(pod.key);
      held.close();
    }
    this.#throttle.hit(`${pod.key}\n${reason}`, (suppressed) =>
      this.#log.warn(
        {
          pod: pod.key,
          uid: pod.uid,
          reason,
          ips: pod.ips,
          ...(held ? { released: held.inode } : {}),
          ...(details.cause ? { err: details.cause } : {}),
          ...(details.scan ? { scan: details.scan } : {}),
          ...(details.claimants ? { claimants: details.claimants } : {}),
          suppressed,
        },
        `pod network namespace not resolved: ${message}; the pod is not enrolled, retried on the next resolve`,
      ),
    );
    return { ok: false, reason, error };
  }

  /** The held namespace still stands: its process is still in it, and it still holds one of the pod's IPs. */
  #stillThere(held: HeldNetns): boolean {
    if (held.pid === undefined || !this.#discovery.processIn(held.pid, held.inode)) return false;
    const addresses = this.#discovery.addressesOf(held.fd, held.description);
    return addresses?.some((a) => held.ips.includes(a)) ?? false;
  }

  /** The path still names the held namespace (a replaced bind mount names a new one). */
  #pathNames(path: string, held: HeldNetns): boolean {
    try {
      return netnsId(path).inode === held.inode;
    } catch {
      return false;
    }
  }
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

/** Claimants for a log line: inode, the IPs it holds, the pod UIDs its cgroups name. */
function claimantFields(claimants: readonly ClaimantEvidence[]) {
  return claimants.map((c) => ({ netns: c.inode, ips: c.ips, podUids: c.podUids }));
}
