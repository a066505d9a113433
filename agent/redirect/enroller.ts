/**
 * Effects of in-pod redirection: open ambit's listeners inside a pod's network namespace, then install the pod's
 * nftables table, in one visit to the namespace. Listeners first, rules second: by the time traffic is redirected,
 * something is listening. If the agent dies, the rules stay and the listeners die with it, so the pod's TCP is
 * refused (fail closed) until an agent enrolls it again and replaces the table in one transaction.
 */
import { existsSync } from "node:fs";
import { isIPv4, type Server } from "node:net";
import { NftablesError } from "../../native-bindings/errors.js";
import { inNetns } from "../../native-bindings/netns.js";
import { runNftJson } from "../../native-bindings/nftables.js";
import { closeFdQuietly, openListenerFd } from "../../native-bindings/sockets.js";
import { type PodSpec, podKey } from "../kube/pod.js";
import { type Logger, silentLogger } from "../log.js";
import { EnrollmentError } from "./errors.js";
import { buildHostRules } from "./host-rules.js";
import { HBONE_PORT, INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT } from "./ports.js";
import { buildRedirectRules, buildRemoveRules, type RedirectPlan, RedirectPlanError } from "./rules.js";

export type ListenerKind = "outbound" | "inbound" | "hbone";

/** Makes the server that will serve one in-pod listener; the proxy decides what a connection means. */
export type ServerFactory = (kind: ListenerKind, family: 4 | 6, pod: PodSpec) => Server;

export interface EnrolledPod {
  pod: PodSpec;
  listeners: Array<{ kind: ListenerKind; family: 4 | 6; server: Server }>;
}

interface ListenerSpec {
  kind: ListenerKind;
  family: 4 | 6;
  address: string;
  port: number;
}

/** REDIRECT in the output hook sends to loopback, so the outbound listener binds loopback; inbound keeps the pod IP. */
function listenerSpecs(pod: PodSpec): ListenerSpec[] {
  const families: Array<4 | 6> = [];
  if (pod.ips.some((ip) => isIPv4(ip))) families.push(4);
  if (pod.ips.some((ip) => !isIPv4(ip))) families.push(6);
  return families.flatMap((family) => [
    { kind: "outbound" as const, family, address: family === 4 ? "127.0.0.1" : "::1", port: OUTBOUND_PORT },
    { kind: "inbound" as const, family, address: family === 4 ? "0.0.0.0" : "::", port: INBOUND_PLAINTEXT_PORT },
    { kind: "hbone" as const, family, address: family === 4 ? "0.0.0.0" : "::", port: HBONE_PORT },
  ]);
}

export interface RedirectorOptions {
  logger?: Logger;
  /**
   * Maintain the node-side probe SNAT table (host-rules.ts). `true`: in the agent's own namespace (the node's, as in
   * a DaemonSet with hostNetwork); a path: in that namespace (a simulated node); absent: not at all.
   */
  hostRules?: boolean | string;
  /** Extra plan settings (marks, excluded ports) applied to every pod. */
  plan?: Omit<RedirectPlan, "podIps">;
}

export class Redirector {
  readonly #log: Logger;
  readonly #pods = new Map<string, EnrolledPod>();
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
  enroll(pod: PodSpec, factory: ServerFactory): EnrolledPod {
    const key = podKey(pod);
    if (pod.ips.length === 0) throw new EnrollmentError("no_ips", key, "pod has no IPs; nothing to redirect");
    if (!existsSync(pod.netns)) {
      throw new EnrollmentError("netns_not_found", key, `network namespace ${pod.netns} does not exist`);
    }
    let rules: ReturnType<typeof buildRedirectRules>;
    try {
      rules = buildRedirectRules({ ...this.#options.plan, podIps: pod.ips });
    } catch (cause) {
      if (cause instanceof RedirectPlanError) throw new EnrollmentError("invalid_plan", key, cause.message, { cause });
      throw cause;
    }
    this.#closeListeners(key);

    const specs = listenerSpecs(pod);
    const fds: number[] = [];
    inNetns(pod.netns, () => {
      try {
        for (const spec of specs) fds.push(openListenerFd({ address: spec.address, port: spec.port }));
      } catch (cause) {
        closeFds(fds);
        throw new EnrollmentError("listener_failed", key, `cannot open in-pod listener: ${errorText(cause)}`, {
          cause,
        });
      }
      try {
        runNftJson(rules);
      } catch (cause) {
        closeFds(fds);
        if (cause instanceof NftablesError) {
          throw new EnrollmentError("rules_rejected", key, `nftables refused the rules: ${cause.message}`, { cause });
        }
        throw cause;
      }
    });

    const listeners = specs.map((spec, i) => {
      const server = factory(spec.kind, spec.family, pod);
      server.listen({ fd: fds[i] });
      return { kind: spec.kind, family: spec.family, server };
    });
    const enrolled = { pod, listeners };
    this.#pods.set(key, enrolled);
    this.#syncHostRules();
    return enrolled;
  }

  /** Remove the pod's rules (if its namespace still exists) and close its listeners. Idempotent. */
  unenroll(key: string): void {
    const enrolled = this.#pods.get(key);
    if (!enrolled) return;
    this.#pods.delete(key);
    try {
      if (existsSync(enrolled.pod.netns)) inNetns(enrolled.pod.netns, () => runNftJson(buildRemoveRules()));
    } catch (cause) {
      throw new EnrollmentError("unenroll_failed", key, `cannot remove redirect rules: ${errorText(cause)}`, {
        cause,
      });
    } finally {
      for (const { server } of enrolled.listeners) server.close();
      this.#syncHostRules();
    }
  }

  /** Stop serving without touching any pod's rules: what an agent shutdown looks like to the pods (fail closed). */
  closeListenersOnly(): void {
    for (const key of this.#pods.keys()) this.#closeListeners(key);
    this.#pods.clear();
  }

  #closeListeners(key: string): void {
    for (const { server } of this.#pods.get(key)?.listeners ?? []) server.close();
  }

  #syncHostRules(): void {
    const where = this.#options.hostRules;
    if (!where) return;
    const rules = buildHostRules(this.enrolled().flatMap((e) => e.pod.ips));
    try {
      if (where === true) runNftJson(rules);
      else inNetns(where, () => runNftJson(rules));
    } catch (cause) {
      this.#log.error(
        { err: cause },
        "cannot update the node's probe SNAT table; kubelet probes to meshed pods may be captured",
      );
    }
  }
}

function closeFds(fds: number[]): void {
  for (const fd of fds) closeFdQuietly(fd);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
