/**
 * Effects of in-pod redirection: open ambit's listeners inside a pod's network namespace, then its return routing
 * (return-routing-apply.ts), then the pod's nftables table, in one visit to the namespace. Listeners first, rules
 * last: by the time traffic is redirected, something is listening, and the app's replies to the agent's transparent
 * connections have their route back. If the agent dies, the rules stay and the listeners die with it, so the pod's TCP is
 * refused (fail closed) until an agent enrolls it again and replaces the table in one transaction.
 *
 * Listeners are SO_REUSEPORT so that a second agent (an upgrade: the new DaemonSet pod beside the old one) can open
 * its own beside the old one's; the kernel then spreads new connections between the two by a hash of the 4-tuple,
 * and once the old agent closes its listeners the new one's take everything, the old one's queue included
 * (migrateOnClose). The new agent's table is built by the same pure function, so re-applying it replaces the old
 * agent's with the same rules in one nftables transaction. The cost: a process in the pod running as the agent's
 * uid (root) can join a group by binding the same port with SO_REUSEPORT and take a share of that pod's own
 * connections; it reaches no other pod's traffic, no key, and nothing it could not break as root in its own pod.
 */
import { writeFileSync } from "node:fs";
import { isIPv4 } from "node:net";
import { NftablesError } from "../../native-bindings/errors.js";
import { runNftJson } from "../../native-bindings/nftables.js";
import { closeFdQuietly, openListenerFd } from "../../native-bindings/sockets.js";
import { objectKey, type PodRecord } from "../kube/records.js";
import { type Logger, silentLogger } from "../log.js";
import { type HeldNetnsRef, inPodNetns, inPodNetnsFd } from "../pod-netns.js";
import { EnrollmentError } from "./errors.js";
import { buildHostRules } from "./host-rules.js";
import { HBONE_PORT, INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT } from "./ports.js";
import { installReturnRouting, type ReturnRoutingFamily, removeReturnRouting } from "./return-routing-apply.js";
import {
  buildRedirectRules,
  buildRemoveRules,
  type NftDocument,
  type RedirectPlan,
  RedirectPlanError,
  TABLE,
} from "./rules.js";

export type ListenerKind = "outbound" | "inbound" | "hbone";

/** A pod to enroll, with its network namespace held open by the agent (agent/netns/). */
export interface EnrollTarget {
  pod: PodRecord;
  netns: HeldNetnsRef;
}

/** One in-pod listener as the proxy serves it. */
export interface ServedListener {
  /** Accepting connections now (false once closed). */
  readonly listening: boolean;
  /** `ip:port` it listens on (inside the pod's namespace), or undefined once closed. */
  address(): string | undefined;
  /** Stop accepting and close the listening socket (connections already accepted go on). Idempotent. */
  close(): void;
}

/**
 * Serves one in-pod listener: `fd` is a listening socket opened in the pod's namespace, the proxy's from this call
 * on (it closes it on close()); the proxy decides what a connection means.
 */
export type ListenerFactory = (kind: ListenerKind, family: 4 | 6, target: EnrollTarget, fd: number) => ServedListener;

export interface EnrolledPod extends EnrollTarget {
  listeners: Array<{ kind: ListenerKind; family: 4 | 6; served: ServedListener }>;
}

interface ListenerSpec {
  kind: ListenerKind;
  family: 4 | 6;
  address: string;
  port: number;
  /**
   * A family the pod spec lists must be served; the other one is served too when the pod's kernel allows it, since
   * the rules capture both families whatever the spec lists (an IPv4-only pod still has an IPv6 link-local address).
   * Where IPv6 is off in the pod, opening it fails, and so does any IPv6 traffic: nothing is lost.
   */
  required: boolean;
}

/** REDIRECT in the output hook sends to loopback, so the outbound listener binds loopback; inbound binds all. */
function listenerSpecs(pod: PodRecord): ListenerSpec[] {
  return podFamilies(pod).flatMap(({ family, required }) => {
    return [
      { kind: "outbound" as const, family, address: family === 4 ? "127.0.0.1" : "::1", port: OUTBOUND_PORT, required },
      {
        kind: "inbound" as const,
        family,
        address: family === 4 ? "0.0.0.0" : "::",
        port: INBOUND_PLAINTEXT_PORT,
        required,
      },
      { kind: "hbone" as const, family, address: family === 4 ? "0.0.0.0" : "::", port: HBONE_PORT, required },
    ];
  });
}

export interface RedirectorOptions {
  logger?: Logger;
  /**
   * Maintain the node-side probe SNAT table (host-rules.ts). `true`: in the agent's own namespace (the node's, as in
   * a DaemonSet with hostNetwork); a path: in that namespace (a simulated node); absent: not at all.
   */
  hostRules?: boolean | string;
  /** Extra plan settings (marks, excluded ports) applied to every pod. */
  plan?: RedirectPlan;
}

export class Redirector {
  readonly #log: Logger;
  readonly #pods = new Map<string, EnrolledPod>();
  /**
   * IPs of pods whose table another agent put in force and this one has not enrolled yet (enrolledByAnother): the
   * node's probe SNAT table keeps them. Without this, the new agent of an upgrade rewrote that table with only the
   * pods it had enrolled so far, and a kubelet probe of any other meshed pod was captured, refused under STRICT.
   */
  readonly #inherited = new Map<string, readonly string[]>();
  readonly #options: RedirectorOptions;

  constructor(options: RedirectorOptions = {}) {
    this.#options = options;
    this.#log = options.logger ?? silentLogger;
  }

  enrolled(): EnrolledPod[] {
    return [...this.#pods.values()];
  }

  /**
   * Enroll (or re-enroll) a pod. Re-enrolling replaces the listeners and the table; there is no moment where the
   * pod's traffic can bypass the proxy, only one where it may be refused.
   */
  enroll(target: EnrollTarget, factory: ListenerFactory): EnrolledPod {
    const { pod, netns } = target;
    const key = objectKey(pod);
    if (pod.ips.length === 0) throw new EnrollmentError("no_ips", key, "pod has no IPs; nothing to redirect");
    let rules: NftDocument;
    try {
      rules = buildRedirectRules(this.#options.plan);
    } catch (cause) {
      if (cause instanceof RedirectPlanError) throw new EnrollmentError("invalid_plan", key, cause.message, { cause });
      throw cause;
    }
    const again = this.#pods.has(key);
    this.#closeListeners(key);

    const { opened, skipped, unmigrated } = inPodNetnsFd(
      netns,
      () => openInPod(key, listenerSpecs(pod), podFamilies(pod), rules, again),
      this.#log,
    );
    if (unmigrated) {
      this.#log.debug(
        { pod: key, reason: unmigrated },
        "queued connections cannot move to another agent's listener here; an upgrade resets those left on the old one",
      );
    }
    if (skipped.length > 0) {
      this.#log.debug({ pod: key, skipped }, "unlisted address family unavailable in the pod; its traffic is refused");
    }
    const listeners = opened.map(({ spec, fd }) => ({
      kind: spec.kind,
      family: spec.family,
      served: factory(spec.kind, spec.family, target, fd),
    }));
    const enrolled = { pod, netns, listeners };
    this.#pods.set(key, enrolled);
    this.#inherited.delete(key);
    this.#syncHostRules();
    return enrolled;
  }

  /**
   * The pod's namespace holds ambit's table although this agent has not enrolled it: another agent did (the one
   * this agent replaces, or one that crashed), and its rules are in force. Read in one nftables list.
   */
  enrolledByAnother(target: EnrollTarget): boolean {
    const key = objectKey(target.pod);
    if (this.#pods.has(key)) return false;
    try {
      const listed = inPodNetnsFd(
        target.netns,
        () => runNftJson({ nftables: [{ list: { tables: {} } }] }),
        this.#log,
      ) as { nftables?: Array<{ table?: { name?: string; family?: string } }> };
      const found = (listed.nftables ?? []).some((o) => o.table?.name === TABLE && o.table.family === "inet");
      if (found) this.#inherited.set(key, target.pod.ips);
      return found;
    } catch (err) {
      this.#log.debug({ err, pod: key }, "cannot list the pod's nftables tables; enrolling it at once");
      return false;
    }
  }

  /**
   * Remove the pod's rules and close its listeners. Idempotent. The namespace is entered through the descriptor the
   * agent still holds (released by the caller afterwards), which keeps it alive even if the pod's sandbox is gone.
   */
  unenroll(key: string): void {
    const enrolled = this.#pods.get(key);
    if (!enrolled) {
      if (this.#inherited.delete(key)) this.#syncHostRules();
      return;
    }
    this.#pods.delete(key);
    try {
      inPodNetnsFd(
        enrolled.netns,
        () => {
          // The table first: once it is gone no connection is made transparent, so the routing is no longer used.
          runNftJson(buildRemoveRules());
          removeReturnRouting([4, 6]);
        },
        this.#log,
      );
    } catch (cause) {
      throw new EnrollmentError("unenroll_failed", key, `cannot remove redirect rules: ${errorText(cause)}`, {
        cause,
      });
    } finally {
      for (const { served } of enrolled.listeners) served.close();
      this.#syncHostRules();
    }
  }

  /**
   * Forget a pod whose namespace is gone (its sandbox was replaced, or it died): its listeners close, and its rules
   * went with the namespace. Idempotent.
   */
  abandon(key: string): void {
    this.#closeListeners(key);
    if (this.#pods.delete(key)) this.#syncHostRules();
  }

  /** Stop serving without touching any pod's rules: what an agent shutdown looks like to the pods (fail closed). */
  closeListenersOnly(): void {
    for (const key of this.#pods.keys()) this.#closeListeners(key);
    this.#pods.clear();
  }

  #closeListeners(key: string): void {
    for (const { served } of this.#pods.get(key)?.listeners ?? []) served.close();
  }

  #syncHostRules(): void {
    const where = this.#options.hostRules;
    if (!where) return;
    const rules = buildHostRules([
      ...this.enrolled().flatMap((e) => e.pod.ips),
      ...[...this.#inherited.values()].flat(),
    ]);
    try {
      if (where === true) runNftJson(rules);
      else inPodNetns(where, () => runNftJson(rules), this.#log);
    } catch (cause) {
      this.#log.error(
        { err: cause },
        "cannot update the node's probe SNAT table; kubelet probes to meshed pods may be captured",
      );
    }
  }
}

/**
 * Both families, each required when the pod spec lists it: its listeners and return route must be in place; the
 * other family's too when the pod's kernel allows it (see ListenerSpec.required).
 */
function podFamilies(pod: PodRecord): ReturnRoutingFamily[] {
  const listed = new Set(pod.ips.map((ip) => (isIPv4(ip) ? 4 : 6)));
  return ([4, 6] as const).map((family) => ({ family, required: listed.has(family) }));
}

/**
 * Inside the pod's namespace: its listeners first, then its return routing, then its rules (see the top of this
 * file). A failure undoes what this visit added, except the return routing of a pod enrolled `again`: its previous
 * table stays in force (nftables replaces a table in one transaction or not at all), and that table needs it.
 */
function openInPod(
  key: string,
  specs: ListenerSpec[],
  families: ReturnRoutingFamily[],
  rules: NftDocument,
  again: boolean,
) {
  const opened: Array<{ spec: ListenerSpec; fd: number }> = [];
  const skipped: string[] = [];
  const unmigrated = migrateOnClose();
  for (const spec of specs) {
    try {
      opened.push({ spec, fd: openListenerFd({ address: spec.address, port: spec.port, reusePort: true }) });
    } catch (cause) {
      if (!spec.required) {
        skipped.push(`${spec.kind}/${spec.family}: ${errorText(cause)}`);
        continue;
      }
      closeFds(opened);
      throw new EnrollmentError("listener_failed", key, `cannot open in-pod listener: ${errorText(cause)}`, { cause });
    }
  }
  let routing: ReturnType<typeof installReturnRouting>;
  try {
    routing = installReturnRouting(families);
  } catch (cause) {
    closeFds(opened);
    throw new EnrollmentError("return_routing_failed", key, `cannot route replies back: ${errorText(cause)}`, {
      cause,
    });
  }
  for (const { family, reason } of routing.skipped) skipped.push(`return routing/${family}: ${reason}`);
  try {
    runNftJson(rules);
  } catch (cause) {
    closeFds(opened);
    const left = again ? "" : takeBackReturnRouting(routing.installed);
    if (cause instanceof NftablesError) {
      throw new EnrollmentError("rules_rejected", key, `nftables refused the rules: ${cause.message}${left}`, {
        cause,
      });
    }
    throw cause;
  }
  return { opened, skipped, unmigrated };
}

/**
 * In the pod's namespace (the calling thread is in it): a listener of a SO_REUSEPORT group that closes hands the
 * connections queued on it, and those still in their handshake, to another member of its group instead of resetting
 * them (net.ipv4.tcp_migrate_req, per namespace, Linux 5.14). That is what lets an agent that is replaced close its
 * listeners beside the new agent's without refusing anyone: without it, 85-110 of 200 queued connections were reset
 * when one of 2 members closed (worker-pool.ts). It changes nothing for a socket outside a group, and for an app's own
 * groups in the pod it only turns those resets into hand-overs. Returns why it could not be set (an older kernel:
 * the hand-over then resets what was queued on the old agent), or undefined.
 */
function migrateOnClose(): string | undefined {
  try {
    writeFileSync(TCP_MIGRATE_REQ, "1");
    return undefined;
  } catch (err) {
    return `${TCP_MIGRATE_REQ}: ${errorText(err)}`;
  }
}

/** Read through the calling thread's network namespace (sysctl's net/ follows the task that opens it). */
const TCP_MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req";

/**
 * Undoes the return routing after the table failed: that failure is the one thrown, with this one's text appended.
 * What could not be removed routes only packets carrying a mark that nothing sets without the table.
 */
function takeBackReturnRouting(families: Array<4 | 6>): string {
  try {
    removeReturnRouting(families);
    return "";
  } catch (err) {
    return `; return routing left in place: ${errorText(err)}`;
  }
}

function closeFds(opened: Array<{ fd: number }>): void {
  for (const { fd } of opened) closeFdQuietly(fd);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
