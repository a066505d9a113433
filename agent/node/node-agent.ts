/**
 * One node's agent: follows the pod source, and for every meshed pod of this node obtains its identity and
 * installs its redirection into the shared proxy. Top-down, a pod's life here is:
 *   pod source change -> diffEnrollment -> certificate (identity/) + listeners and rules (redirect/) -> proxy/
 */
import type { CertManager } from "../identity/cert-manager.js";
import { identityOfPod } from "../identity/spiffe.js";
import { diffEnrollment } from "../kube/enrollment-diff.js";
import { type ClusterState, type PodSpec, podKey } from "../kube/pod.js";
import type { Logger } from "../log.js";
import type { MeshProxy } from "../proxy/proxy.js";
import type { Redirector } from "../redirect/enroller.js";
import { EnrollmentError } from "../redirect/errors.js";

export interface EnrollmentObserver {
  enrolled(pod: PodSpec, seconds: number): void;
  unenrolled(pod: PodSpec): void;
  failed(pod: PodSpec, reason: string): void;
}

/** Fan enrollment events out to several observers. */
export function enrollmentObservers(...list: EnrollmentObserver[]): EnrollmentObserver {
  return {
    enrolled: (...a) => {
      for (const o of list) o.enrolled(...a);
    },
    unenrolled: (...a) => {
      for (const o of list) o.unenrolled(...a);
    },
    failed: (...a) => {
      for (const o of list) o.failed(...a);
    },
  };
}

export interface NodeAgentOptions {
  nodeName: string;
  trustDomain: string;
  certs: CertManager;
  redirector: Redirector;
  proxy: MeshProxy;
  logger: Logger;
  enrollment?: EnrollmentObserver;
  /** How often pods whose enrollment failed are tried again. */
  retryMs?: number;
}

export class NodeAgent {
  readonly #o: NodeAgentOptions;
  #state: ClusterState = { namespaces: [], pods: [] };
  readonly #failed = new Map<string, PodSpec>();
  #retry: NodeJS.Timeout | undefined;

  constructor(options: NodeAgentOptions) {
    this.#o = options;
    this.#retry = setInterval(() => this.#retryFailed(), options.retryMs ?? 5000);
    this.#retry.unref();
  }

  get state(): ClusterState {
    return this.#state;
  }

  /** Pods whose enrollment failed and is being retried, by key. */
  failedPods(): string[] {
    return [...this.#failed.keys()];
  }

  /** Apply a new view of the cluster: enroll, unenroll and re-enroll this node's pods as the diff says. */
  async apply(next: ClusterState): Promise<void> {
    const diff = diffEnrollment(this.#state, next, this.#o.nodeName);
    this.#state = next;
    this.#o.proxy.setState(next);
    for (const pod of diff.unenroll) this.#unenroll(pod);
    for (const { previous } of diff.reenroll) this.#unenroll(previous);
    for (const { previous, current } of diff.updated) {
      if (previous.serviceAccount !== current.serviceAccount) {
        this.#o.certs.release(identityOfPod(previous, this.#o.trustDomain), previous);
        await this.#acquire(current);
      }
    }
    await Promise.all([...diff.enroll, ...diff.reenroll.map((c) => c.current)].map((pod) => this.#enroll(pod)));
  }

  /** Stop serving, leaving every pod's rules in place: their traffic is refused until an agent returns. */
  stop(): void {
    clearInterval(this.#retry);
    this.#o.redirector.closeListenersOnly();
    this.#o.proxy.close();
    this.#o.certs.close();
  }

  async #enroll(pod: PodSpec): Promise<void> {
    const key = podKey(pod);
    const log = this.#o.logger.child({ pod: key });
    const started = process.hrtime.bigint();
    try {
      this.#o.redirector.enroll(pod, this.#o.proxy.serverFactory);
    } catch (err) {
      const reason = err instanceof EnrollmentError ? err.code : "unexpected";
      this.#failed.set(key, pod);
      this.#o.enrollment?.failed(pod, reason);
      log.error({ err, reason }, "enrollment failed; the pod's traffic is not redirected, retrying in the background");
      return;
    }
    this.#failed.delete(key);
    const acquired = await this.#acquire(pod);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    this.#o.enrollment?.enrolled(pod, seconds);
    log.info({ ips: pod.ips, identity: acquired, seconds }, "pod enrolled");
  }

  async #acquire(pod: PodSpec): Promise<boolean> {
    try {
      await this.#o.certs.acquire(identityOfPod(pod, this.#o.trustDomain), pod);
      return true;
    } catch (err) {
      this.#o.logger.warn(
        { err, pod: podKey(pod) },
        "no certificate yet; the pod's meshed traffic is refused until the CA answers (retrying)",
      );
      return false;
    }
  }

  #unenroll(pod: PodSpec): void {
    const key = podKey(pod);
    this.#failed.delete(key);
    try {
      this.#o.redirector.unenroll(key);
      this.#o.enrollment?.unenrolled(pod);
      this.#o.logger.info({ pod: key }, "pod unenrolled; its traffic is no longer redirected");
    } catch (err) {
      this.#o.logger.error({ err, pod: key }, "unenrollment failed; rules may remain in the pod (traffic refused)");
    } finally {
      this.#o.certs.release(identityOfPod(pod, this.#o.trustDomain), pod);
    }
  }

  #retryFailed(): void {
    for (const pod of [...this.#failed.values()]) void this.#enroll(pod);
  }
}
