/**
 * Pure decisions of network namespace discovery (discovery.ts does the reading): which processes share a namespace,
 * which pod IPs are worth matching, which namespaces claim them, and whether that makes one answer, none, or too many.
 */
import { canonicalIp } from "../kube/ip.js";

/** One process and the network namespace its /proc/PID/ns/net link names. */
export interface ProcessNetns {
  pid: number;
  inode: number;
}

/** The processes of one network namespace, lowest PID first (on a pod, usually its sandbox's pause process). */
export interface NamespaceGroup {
  inode: number;
  pids: number[];
}

/** A namespace and the addresses of its interfaces (canonical, see wantedIps). */
export interface CandidateNamespace {
  inode: number;
  addresses: readonly string[];
}

/** A namespace holding some of the pod's IPs (those are in `ips`). */
export interface Claimant {
  inode: number;
  ips: string[];
}

/** A claimant and the pod UIDs its processes' cgroups name (empty: none does, as outside Kubernetes). */
export interface ClaimantEvidence extends Claimant {
  podUids: readonly string[];
}

export type NamespaceDecision =
  /** `ignored`: the other claimants, set aside on cgroup evidence (see chooseNamespace). */
  | { kind: "found"; inode: number; ips: string[]; ignored: ClaimantEvidence[] }
  | { kind: "not_found" }
  | { kind: "ambiguous"; claimants: ClaimantEvidence[] }
  /** Only namespaces whose processes belong to other pods hold the IPs: never this pod's. */
  | { kind: "other_pod"; claimants: ClaimantEvidence[] };

/** The inode in a /proc/PID/ns/net link ("net:[4026531840]"), or undefined for anything else. */
export function parseNetnsLink(link: string): number | undefined {
  const m = /^net:\[(\d{1,15})\]$/.exec(link);
  return m?.[1] === undefined ? undefined : Number(m[1]);
}

/** Processes grouped by namespace, leaving out the namespaces in `skip` (the host's, the agent's own). */
export function groupByNamespace(processes: Iterable<ProcessNetns>, skip: ReadonlySet<number>): NamespaceGroup[] {
  const groups = new Map<number, number[]>();
  for (const { pid, inode } of processes) {
    if (skip.has(inode)) continue;
    const pids = groups.get(inode);
    if (pids) pids.push(pid);
    else groups.set(inode, [pid]);
  }
  return [...groups]
    .map(([inode, pids]) => ({ inode, pids: pids.sort((a, b) => a - b) }))
    .sort((a, b) => a.inode - b.inode);
}

/**
 * The pod's IPs worth matching, canonical and deduplicated. Loopback, unspecified, link-local and multicast
 * addresses are dropped: every namespace has a loopback, link-local addresses repeat across namespaces, so none of
 * them says which namespace is the pod's (and a pod record listing one must not match every namespace).
 */
export function wantedIps(ips: readonly string[]): string[] {
  const out = new Set<string>();
  for (const ip of ips) {
    const c = canonicalIp(ip);
    if (c !== undefined && !notPodSpecific(c)) out.add(c);
  }
  return [...out];
}

function notPodSpecific(canonical: string): boolean {
  if (canonical.includes(".")) {
    const first = Number(canonical.split(".")[0]);
    const second = Number(canonical.split(".")[1]);
    return first === 0 || first === 127 || (first === 169 && second === 254) || first >= 224;
  }
  const groups = canonical.split(":");
  const head = Number.parseInt(groups[0] ?? "0", 16);
  const allZeroHead = groups.slice(0, 7).every((g) => g === "0");
  const last = groups[7] ?? "";
  return (allZeroHead && (last === "0" || last === "1")) || (head & 0xffc0) === 0xfe80 || (head & 0xff00) === 0xff00;
}

/** The namespaces holding any of `wanted` (canonical IPs), with the ones each holds. */
export function claimantsOf(wanted: readonly string[], candidates: Iterable<CandidateNamespace>): Claimant[] {
  const want = new Set(wanted);
  const out: Claimant[] = [];
  for (const c of candidates) {
    const ips = [...new Set(c.addresses.filter((a) => want.has(a)))];
    if (ips.length > 0) out.push({ inode: c.inode, ips });
  }
  return out;
}

/**
 * One namespace for the pod, or why not. With the pod's UID known, cgroups are the stronger evidence (the reference
 * node agents tie processes to pods that way): a claimant whose processes name this pod wins; one whose processes
 * name only other pods is set aside (a pod with NET_ADMIN can add any address to its own interfaces, and must not
 * be mistaken for the pod it copies). Otherwise exactly one claimant must remain.
 */
export function chooseNamespace(claimants: readonly ClaimantEvidence[], podUid?: string): NamespaceDecision {
  if (claimants.length === 0) return { kind: "not_found" };
  const uid = podUid ? canonicalPodUid(podUid) : undefined;
  const confirmed = uid === undefined ? [] : claimants.filter((c) => c.podUids.includes(uid));
  const unknown = claimants.filter((c) => c.podUids.length === 0);
  const pool = uid === undefined ? [...claimants] : confirmed.length > 0 ? confirmed : unknown;
  if (pool.length === 0) return { kind: "other_pod", claimants: [...claimants] };
  if (pool.length > 1) return { kind: "ambiguous", claimants: pool };
  const [only] = pool as [ClaimantEvidence];
  const ignored = claimants.filter((c) => c !== only && !pool.includes(c));
  return { kind: "found", inode: only.inode, ips: only.ips, ignored };
}

/**
 * Pod UIDs named in a /proc/PID/cgroup file. The kubelet puts each pod's containers under a cgroup whose name
 * carries "pod" and the UID: /kubepods/burstable/pod<uid>/<container> (cgroupfs driver) or
 * kubepods-burstable-pod<uid with _ for ->.slice (systemd driver), possibly below "/../.." in a cgroup namespace.
 */
export function podUidsInCgroup(text: string): string[] {
  const out = new Set<string>();
  const re =
    /(?:^|[^0-9A-Za-z])pod([0-9a-f]{8})[-_]?([0-9a-f]{4})[-_]?([0-9a-f]{4})[-_]?([0-9a-f]{4})[-_]?([0-9a-f]{12})(?![0-9A-Za-z])/gi;
  for (const line of text.split("\n")) {
    const path = line.split(":").slice(2).join(":");
    for (const m of path.matchAll(re)) out.add(m.slice(1, 6).join("-").toLowerCase());
  }
  return [...out];
}

/** A pod UID as the API server writes it: lowercase, dashed. */
export function canonicalPodUid(uid: string): string {
  return uid.trim().toLowerCase();
}
