/**
 * Finds the network namespace that holds a pod's IPs, as the reference node agents do with hostPID: list
 * /proc/PID/ns/net, group the processes by namespace inode, leave out the host's and the agent's own, open each
 * remaining namespace once through one of its processes and read its interface addresses inside it.
 *
 * A process can exit, and its PID be reused, at any step: a vanished entry is skipped, and a descriptor is only
 * trusted once fstat shows it is the namespace the link named. Addresses are read through that same descriptor,
 * and the descriptor of the namespace found is the one handed back, so what was checked is what is held.
 *
 * Cost: the scan runs only when a pod needs resolving, and a namespace's addresses (plus the /proc listing) are
 * reused for `cacheTtlMs`, so a burst of pods (an agent start) costs one listing and one visit per namespace. A
 * failure is never answered from cached data: it is checked once more against a fresh scan, and a cached "found" is
 * confirmed through the descriptor handed back. The price: a namespace that gains one of a pod's IPs within
 * cacheTtlMs of its addresses being read is not seen as a second claimant until that entry expires.
 *
 * Measured (make bench BENCH=netns, two runs; 2 vCPUs, kernel 6.18, 52 namespaces with a process each): listing
 * /proc costs 9.5-16 us per process (2 ms for 125 processes, 11-14 ms for 1,124, 40 ms for 4,124), reading one
 * namespace's addresses 100-185 us; a cold resolve is both (9-12 / 16-23 / 45 ms), a cached one 0.15-0.3 ms, and
 * 50 pods resolved one after the other from cold 27-68 ms. All of it is synchronous on the main thread (the
 * namespace visits must be; the listing could move off it), so a cold scan on a node of 4,000 processes holds the
 * event loop for about 45 ms.
 */
import { closeSync, openSync, readdirSync, readlinkSync, readSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { interfaceAddresses } from "../../native-bindings/ifaddrs.js";
import { closeFdQuietly } from "../../native-bindings/libc.js";
import { netnsId, openNetns } from "../../native-bindings/netns.js";
import { canonicalIp } from "../kube/ip.js";
import { type Logger, silentLogger } from "../log.js";
import { LogThrottle } from "../log-throttle.js";
import { inPodNetnsFd } from "../pod-netns.js";
import {
  type CandidateNamespace,
  type ClaimantEvidence,
  chooseNamespace,
  claimantsOf,
  groupByNamespace,
  type NamespaceGroup,
  type ProcessNetns,
  parseNetnsLink,
  podUidsInCgroup,
} from "./namespace-match.js";

/** Addresses read per namespace at most: a pod with NET_ADMIN can add any number to its own interfaces. */
export const MAX_ADDRESSES_PER_NETNS = 4096;
/** Processes of one claimant whose cgroup is read for pod UIDs, and bytes read of each cgroup file. */
const MAX_CGROUP_PIDS = 8;
const MAX_CGROUP_BYTES = 16 * 1024;

export interface NetnsDiscoveryOptions {
  /** Where /proc is (tests point it at a directory of their own); default "/proc". */
  procRoot?: string;
  /** How long a /proc listing and a namespace's addresses are reused; default 2000 ms. */
  cacheTtlMs?: number;
  logger?: Logger;
}

/** What one scan saw: for logs, and for the bench. */
export interface ScanStats {
  /** Process entries listed in /proc. */
  processes: number;
  /** Namespaces other than the host's and the agent's own. */
  namespaces: number;
  /** Namespaces whose addresses were read in this scan (the rest came from the cache). */
  addressReads: number;
  /** Entries that vanished between listing and reading (the process exited) or whose PID now names another. */
  gone: number;
  /** Entries that could not be read (permissions, an unexpected link). */
  unreadable: number;
  /**
   * Namespaces with processes in them that could not be opened through any of them, or not entered (not a network
   * namespace): one of them may be the pod's, so "not found" is then not certain.
   */
  unreadableNamespaces: number;
  /** The listing was reused from an earlier scan. */
  cachedListing: boolean;
  /** Time spent listing /proc (0 when reused), and in all. */
  listMs: number;
  ms: number;
}

/** A namespace found for the caller; the caller owns `fd` (close it, or hand it to a HeldNetns). */
export interface FoundNetns {
  fd: number;
  inode: number;
  /** The process the descriptor was opened through (/proc/PID/ns/net). */
  pid: number;
  /** The pod IPs it holds. */
  ips: string[];
}

export type DiscoveryResult =
  | { kind: "found"; netns: FoundNetns; ignored: ClaimantEvidence[]; stats: ScanStats }
  | { kind: "not_found"; stats: ScanStats }
  | { kind: "ambiguous"; claimants: ClaimantEvidence[]; stats: ScanStats }
  | { kind: "other_pod"; claimants: ClaimantEvidence[]; stats: ScanStats }
  /** /proc itself could not be listed. */
  | { kind: "unreadable"; error: unknown };

interface Listing {
  at: number;
  ms: number;
  groups: NamespaceGroup[];
  processes: number;
  gone: number;
  unreadable: number;
}

interface CachedAddresses {
  at: number;
  /** The process it was read through: the entry stands only while that process is still in the namespace. */
  pid: number;
  addresses: string[];
}

interface Attempt {
  result: DiscoveryResult;
  /** Some of the answer came from the cache (a failure is then checked again against a fresh scan). */
  usedCache: boolean;
}

export class NetnsDiscovery {
  readonly #root: string;
  readonly #ttlMs: number;
  readonly #log: Logger;
  readonly #throttle = new LogThrottle({ intervalMs: 60_000 });
  #listing: Listing | undefined;
  /**
   * Namespace inode -> its addresses. An inode is reused as soon as its namespace is freed (a restarted sandbox may
   * get its predecessor's), so an entry also names the process it was read through, and stands only while the
   * current listing still shows that process in that inode.
   */
  readonly #addresses = new Map<number, CachedAddresses>();
  #skip: Set<number> | undefined;
  /** The nsfs device: a descriptor on any other device is not a namespace. */
  readonly #nsDev = netnsId("/proc/self/ns/net").dev;

  constructor(options: NetnsDiscoveryOptions = {}) {
    this.#root = options.procRoot ?? "/proc";
    this.#ttlMs = options.cacheTtlMs ?? 2000;
    this.#log = options.logger ?? silentLogger;
  }

  /**
   * The one namespace holding any of `wanted` (canonical IPs, see wantedIps), or why there is none. `podUid`, when
   * given, lets cgroup evidence set aside namespaces of other pods (namespace-match.ts chooseNamespace).
   */
  find(wanted: readonly string[], podUid?: string): DiscoveryResult {
    const first = this.#attempt(wanted, podUid, false);
    if (first.result.kind === "found" || !first.usedCache) return first.result;
    return this.#attempt(wanted, podUid, true).result;
  }

  /**
   * Whether process `pid` is still in namespace `inode`: one readlink, the cheap check that a held namespace is
   * still a live sandbox (a namespace no process is in is one whose pod is gone, even while a descriptor keeps it).
   */
  processIn(pid: number, inode: number): boolean {
    try {
      return parseNetnsLink(readlinkSync(`${this.#root}/${pid}/ns/net`)) === inode;
    } catch {
      return false;
    }
  }

  /** The canonical addresses of the namespace open at `fd` (read inside it), or undefined if it cannot be entered. */
  addressesOf(fd: number, description: string): string[] | undefined {
    try {
      const found = inPodNetnsFd({ fd, description }, () => interfaceAddresses(MAX_ADDRESSES_PER_NETNS), this.#log);
      if (found.length >= MAX_ADDRESSES_PER_NETNS) {
        this.#throttle.hit(`addresses\n${description}`, (suppressed) =>
          this.#log.warn(
            { netns: description, max: MAX_ADDRESSES_PER_NETNS, suppressed },
            "network namespace has more addresses than are read; the rest are not matched against pod IPs",
          ),
        );
      }
      return found.flatMap((a) => canonicalIp(a.address) ?? []);
    } catch (err) {
      this.#log.debug({ err, netns: description }, "cannot read a network namespace's addresses; skipping it");
      return undefined;
    }
  }

  /** The namespaces never taken for a pod's: the host's (/proc/1) and the agent's own. */
  skipped(): ReadonlySet<number> {
    if (this.#skip) return this.#skip;
    const skip = new Set([netnsId("/proc/self/ns/net").inode]);
    try {
      const host = parseNetnsLink(readlinkSync(`${this.#root}/1/ns/net`));
      if (host !== undefined) skip.add(host);
    } catch (err) {
      this.#log.warn(
        { err, path: `${this.#root}/1/ns/net` },
        "cannot read the host's network namespace; only the agent's own is left out of pod namespace scans (run with hostPID and root to leave out the host's too)",
      );
    }
    this.#skip = skip;
    return skip;
  }

  #attempt(wanted: readonly string[], podUid: string | undefined, fresh: boolean): Attempt {
    const started = performance.now();
    const now = Date.now();
    let listing = this.#listing;
    const cachedListing = !fresh && listing !== undefined && now - listing.at < this.#ttlMs;
    if (!cachedListing || listing === undefined) {
      try {
        listing = this.#list(now);
      } catch (error) {
        return { result: { kind: "unreadable", error }, usedCache: false };
      }
      this.#listing = listing;
    }
    let usedCache = cachedListing;
    const opened = new Map<number, { fd: number; pid: number }>();
    const counts = {
      gone: cachedListing ? 0 : listing.gone,
      unreadable: cachedListing ? 0 : listing.unreadable,
      unreadableNamespaces: 0,
    };
    try {
      const candidates: CandidateNamespace[] = [];
      let addressReads = 0;
      for (const group of listing.groups) {
        const cached = this.#addresses.get(group.inode);
        if (!fresh && cached && now - cached.at < this.#ttlMs && group.pids.includes(cached.pid)) {
          candidates.push({ inode: group.inode, addresses: cached.addresses });
          usedCache = true;
          continue;
        }
        const open = this.#openGroup(group, counts);
        if (open === "gone") continue;
        if (open === "unreadable") {
          counts.unreadableNamespaces++;
          continue;
        }
        opened.set(group.inode, open);
        const addresses = this.addressesOf(open.fd, `net:[${group.inode}] (pid ${open.pid})`);
        if (addresses === undefined) {
          counts.unreadableNamespaces++;
          continue;
        }
        addressReads++;
        this.#addresses.set(group.inode, { at: now, pid: open.pid, addresses });
        candidates.push({ inode: group.inode, addresses });
      }
      this.#forgetAbsent(listing);

      const stats = (): ScanStats => ({
        processes: listing.processes,
        namespaces: listing.groups.length,
        addressReads,
        gone: counts.gone,
        unreadable: counts.unreadable,
        unreadableNamespaces: counts.unreadableNamespaces,
        cachedListing,
        listMs: cachedListing ? 0 : round(listing.ms),
        ms: round(performance.now() - started),
      });
      const claimants = claimantsOf(wanted, candidates);
      const groups = new Map(listing.groups.map((g) => [g.inode, g]));
      const evidence = claimants.map((c) => ({
        ...c,
        podUids: podUid ? this.#podUidsOf(groups.get(c.inode)?.pids ?? []) : [],
      }));
      const decision = chooseNamespace(evidence, podUid);
      if (decision.kind !== "found") return { result: { ...decision, stats: stats() }, usedCache };

      let open = opened.get(decision.inode);
      if (!open) {
        // The addresses came from the cache: open the namespace now and confirm through that descriptor.
        const group = groups.get(decision.inode) as NamespaceGroup;
        const reopened = this.#openGroup(group, counts);
        const confirmed =
          typeof reopened === "object" && this.addressesOf(reopened.fd, `net:[${group.inode}] (pid ${reopened.pid})`);
        if (typeof reopened === "object") opened.set(decision.inode, reopened);
        if (typeof reopened !== "object" || !confirmed || !confirmed.some((a) => decision.ips.includes(a))) {
          this.#addresses.delete(decision.inode);
          return { result: { kind: "not_found", stats: stats() }, usedCache: true };
        }
        open = reopened;
      }
      opened.delete(decision.inode);
      const netns = { fd: open.fd, inode: decision.inode, pid: open.pid, ips: decision.ips };
      return { result: { kind: "found", netns, ignored: decision.ignored, stats: stats() }, usedCache };
    } finally {
      for (const { fd } of opened.values()) closeFdQuietly(fd);
    }
  }

  /** Every process's namespace, grouped; entries that vanish or cannot be read while listing are counted. */
  #list(now: number): Listing {
    const started = performance.now();
    const skip = this.skipped();
    const processes: ProcessNetns[] = [];
    let gone = 0;
    let unreadable = 0;
    const names = readdirSync(this.#root).filter((n) => /^[1-9][0-9]{0,9}$/.test(n));
    for (const name of names) {
      let link: string;
      try {
        link = readlinkSync(`${this.#root}/${name}/ns/net`);
      } catch (err) {
        if (isGone(err)) gone++;
        else unreadable++;
        continue;
      }
      const inode = parseNetnsLink(link);
      if (inode === undefined) unreadable++;
      else processes.push({ pid: Number(name), inode });
    }
    const groups = groupByNamespace(processes, skip);
    return { at: now, ms: performance.now() - started, groups, processes: names.length, gone, unreadable };
  }

  /**
   * A descriptor of the group's namespace, through the first of its processes still there. fstat must show the inode
   * the link named: between readlink and open the process may have exited and its PID gone to another process.
   * Otherwise "gone" (every process left) or "unreadable" (some could not be opened for another reason).
   */
  #openGroup(
    group: NamespaceGroup,
    counts: { gone: number; unreadable: number },
  ): { fd: number; pid: number } | "gone" | "unreadable" {
    let unreadable = false;
    for (const pid of group.pids) {
      let fd: number;
      try {
        fd = openNetns(`${this.#root}/${pid}/ns/net`);
      } catch (err) {
        if (isGone(err)) counts.gone++;
        else {
          counts.unreadable++;
          unreadable = true;
        }
        continue;
      }
      const id = netnsId(fd);
      if (id.inode === group.inode && id.dev === this.#nsDev) return { fd, pid };
      closeFdQuietly(fd);
      counts.gone++;
    }
    return unreadable ? "unreadable" : "gone";
  }

  #podUidsOf(pids: readonly number[]): string[] {
    const uids = new Set<string>();
    for (const pid of pids.slice(0, MAX_CGROUP_PIDS)) {
      const text = readBounded(`${this.#root}/${pid}/cgroup`, MAX_CGROUP_BYTES);
      if (text !== undefined) for (const uid of podUidsInCgroup(text)) uids.add(uid);
    }
    return [...uids];
  }

  #forgetAbsent(listing: Listing): void {
    const present = new Set(listing.groups.map((g) => g.inode));
    for (const inode of this.#addresses.keys()) if (!present.has(inode)) this.#addresses.delete(inode);
  }
}

const round = (ms: number) => Math.round(ms * 100) / 100;

/** The process (or its /proc entry) is gone: the usual race of a scan, not an error. */
function isGone(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return code === "ENOENT" || code === "ESRCH";
}

/** At most `max` bytes of a small /proc file, or undefined if it cannot be read (the process exited). */
function readBounded(path: string, max: number): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return undefined;
  }
  try {
    const buf = Buffer.alloc(max);
    let length = 0;
    while (length < max) {
      const n = readSync(fd, buf, length, max - length, null);
      if (n === 0) break;
      length += n;
    }
    return buf.toString("utf8", 0, length);
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}
