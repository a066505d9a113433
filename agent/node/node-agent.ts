/**
 * One node's agent: follows the cluster source, and for every meshed pod of this node finds its network namespace,
 * obtains its identity and hands its redirected listeners to the data plane. Top-down, a pod's life here is:
 *   source change -> diffEnrollment -> namespace (netns/) -> certificate (identity/) + listeners and rules
 *   (redirect/) -> data plane: dataplane/mesh-dataplane.ts (this thread) -> worker.ts (a worker thread's epoll
 *   loop) -> mesh-worker.ts -> outbound.ts (15001) | inbound-hbone.ts (15008) | inbound-plain.ts (15006)
 * The decisions those handlers share are plain functions in proxy/ (outbound-route.ts, own-destination.ts, ...).
 */

import { type CniSandbox, type SandboxEnrollment, staleSandboxes, withSandboxes } from "../cni/decide.js";
import type { CertManager } from "../identity/cert-manager.js";
import { identityOfPod, type SpiffeId } from "../identity/spiffe.js";
import { type ClusterState, emptyClusterState, podsOfNode } from "../kube/cluster-state.js";
import { diffEnrollment, isMeshedPod } from "../kube/enrollment-diff.js";
import { objectKey, type PodRecord } from "../kube/records.js";
import type { Logger } from "../log.js";
import type { NetnsResolution, PodNetnsRequest } from "../netns/netns-registry.js";
import type { HeldNetnsRef } from "../pod-netns.js";
import { PolicyWarnings } from "../policy/warnings.js";
import type { ListenerFactory, Redirector } from "../redirect/enroller.js";
import { EnrollmentError } from "../redirect/errors.js";

export interface EnrollmentObserver {
  enrolled(pod: PodRecord, seconds: number): void;
  unenrolled(pod: PodRecord): void;
  failed(pod: PodRecord, reason: string): void;
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

/** What the agent needs of the data plane that serves its pods (agent/dataplane/mesh-dataplane.ts). */
export interface MeshDataPath {
  /** The cluster as the source sees it now: which IPs are meshed, with which identity, Services and policies. */
  setState(state: ClusterState): void;
  /** Serves each in-pod listener the redirector opens. */
  readonly listenerFactory: ListenerFactory;
  /** Every HBONE session torn down and its streams reset; resolves once nothing is left running. */
  close(): Promise<void>;
  /** Resolves once no connection is left, or after `ms` (with how many are left, which close() will reset). */
  drain(ms: number): Promise<{ left: number; seconds: number }>;
}

/** What the agent needs of the namespace registry (agent/netns/netns-registry.ts). */
export interface PodNamespaces {
  resolve(pod: PodNetnsRequest): NetnsResolution;
  release(podKey: string): boolean;
  releaseAll(): void;
}

export interface NodeAgentOptions {
  nodeName: string;
  trustDomain: string;
  certs: CertManager;
  redirector: Redirector;
  proxy: MeshDataPath;
  namespaces: PodNamespaces;
  /**
   * Enter a pod's namespace at the path its record names (the `ambit.dev/netns` annotation), without looking for it.
   * Local mode and the simulator only: in a cluster any pod author can write that annotation, and it would point
   * the agent at another process's namespace. Default false: namespaces are found in /proc.
   */
  netnsPaths?: boolean;
  logger: Logger;
  enrollment?: EnrollmentObserver;
  /** How often pods whose enrollment failed (namespace not found yet, rules refused...) are tried again. */
  retryMs?: number;
  /**
   * How often enrolled pods' namespaces are checked: a pod whose sandbox was replaced (new namespace, same pod, no
   * API event that says so) is enrolled again in its new namespace. Until then its new namespace has no rules: this
   * bounds that window (a CNI plugin closes it). Each check of a held namespace costs ~0.2 ms.
   */
  verifyMs?: number;
}

/**
 * Where the namespace a pod was enrolled in came from (a closed set, shown in /config_dump): `cni`, the sandbox the
 * CNI plugin reported at ADD; `api`, the pod's record from the cluster source (API server or manifests), its
 * namespace found in /proc or at the record's path, as for pods already running when the agent starts.
 */
export type EnrollmentSource = "cni" | "api";

/** How and when a pod's rules and listeners went in. */
export interface PodEnrollment {
  source: EnrollmentSource;
  at: Date;
}

export class NodeAgent {
  readonly #o: NodeAgentOptions;
  /** The cluster as the source reports it. */
  #source: ClusterState = emptyClusterState();
  /** The cluster as enrolled: #source with the CNI plugin's sandboxes standing in for their pods' records. */
  #state: ClusterState = emptyClusterState();
  /** Sandboxes the CNI plugin reported (ADD) and not yet deleted, by pod key. */
  readonly #sandboxes = new Map<string, CniSandbox>();
  /** Counts changes to #sandboxes, so #view knows when its patched maps are stale. */
  #sandboxChanges = 0;
  #patched?: {
    pods: ClusterState["pods"];
    nodePods: ClusterState["nodePods"];
    changes: number;
    view: ClusterState;
  };
  readonly #stateListeners = new Set<() => void>();
  /** Certificate acquisitions of pods being enrolled, by pod key: true once issued, false if the CA failed. */
  readonly #acquiring = new Map<string, Promise<boolean>>();
  /** Pods holding a certificate reference before their sandbox has IPs (see #prefetch), by key. */
  readonly #prefetched = new Map<string, PodRecord>();
  /** Pods that should be enrolled but are not, by key, with the reason (a closed set, see failedPods). */
  readonly #failed = new Map<string, { pod: PodRecord; reason: string }>();
  /** Enrolled pods (those the redirector holds), by key: where their namespace came from and when. */
  readonly #enrollments = new Map<string, PodEnrollment>();
  /** Pods holding a reference on their identity's certificate (released exactly once when they leave). */
  readonly #certified = new Set<string>();
  /** Certificate acquisitions under way (see apply). */
  readonly #pending = new Set<Promise<unknown>>();
  readonly #policyWarnings = new PolicyWarnings();
  readonly #timers: NodeJS.Timeout[];
  /** Pods another agent's rules serve, waiting for their certificate here before this agent takes them over. */
  readonly #awaitingCertificate = new Map<string, PodRecord>();
  #stopped = false;

  constructor(options: NodeAgentOptions) {
    this.#o = options;
    this.#timers = [
      setInterval(() => this.#retryFailed(), options.retryMs ?? 5000),
      setInterval(() => this.#verifyNamespaces(), options.verifyMs ?? 5000),
    ];
    for (const t of this.#timers) t.unref();
  }

  get state(): ClusterState {
    return this.#state;
  }

  /** Pods whose enrollment failed and is being retried, by key, with why. */
  failedPods(): Array<{ pod: string; reason: string }> {
    return [...this.#failed].map(([pod, { reason }]) => ({ pod, reason }));
  }

  /** How and when the pod was enrolled; undefined when it is not. */
  enrollmentOf(key: string): PodEnrollment | undefined {
    return this.#enrollments.get(key);
  }

  /**
   * Apply a new view of the cluster: enroll, unenroll and re-enroll this node's pods as the diff says. Returns once
   * every pod's redirection is in place; certificates are fetched in the background (settled() waits for them), so
   * the next view never waits for a key generation and a CA round trip: 20 pods scheduled one after another get
   * their rules one after another, not each behind the previous one's certificate. Until its certificate comes, a
   * pod's meshed traffic is refused (fail closed) and readiness says so.
   */
  apply(source: ClusterState): void {
    this.#source = source;
    for (const key of staleSandboxes(source, this.#sandboxes)) this.#dropSandbox(key);
    this.#applyView(this.#view());
    for (const listener of this.#stateListeners) listener();
  }

  /** The cluster as the source last reported it (the CNI server decides on it). */
  get sourceState(): ClusterState {
    return this.#source;
  }

  /** Calls `listener` after every apply(); returns how to stop. */
  onApply(listener: () => void): () => void {
    this.#stateListeners.add(listener);
    return () => this.#stateListeners.delete(listener);
  }

  /**
   * Enrolls a pod in the sandbox the CNI plugin reported (its namespace path and addresses), the pod's record
   * having been found meshed. Resolves once its rules and listeners are in place and its certificate issued, or
   * after `certificateWaitMs` without it (`certified: false`: its meshed traffic is refused until the CA answers,
   * fails closed); or says why the rules are not in place.
   */
  async enrollSandbox(key: string, sandbox: CniSandbox, certificateWaitMs: number): Promise<SandboxEnrollment> {
    this.#sandboxes.set(key, sandbox);
    this.#sandboxChanges++;
    this.#applyView(this.#view());
    const failed = this.#failed.get(key);
    if (failed) return { ok: false, reason: failed.reason };
    if (!this.sandboxEnrolled(key, sandbox.netns)) return { ok: false, reason: "not_enrolled" };
    // Without its certificate the pod's first connections would be refused (not leaked): worth a bounded wait.
    const acquiring = this.#acquiring.get(key);
    let timer: NodeJS.Timeout | undefined;
    const certified = await Promise.race([
      acquiring ?? Promise.resolve(true),
      new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), certificateWaitMs);
      }),
    ]);
    clearTimeout(timer);
    return { ok: true, certified };
  }

  /** Whether the pod is enrolled in this sandbox's namespace now (CNI CHECK). */
  sandboxEnrolled(key: string, netns: string): boolean {
    return this.#o.redirector.enrolled().some((e) => objectKey(e.pod) === key && e.pod.netns === netns);
  }

  /**
   * Forgets the sandbox (CNI DEL) unless a newer one of the pod was added since; the pod is then enrolled as its
   * record alone says (unenrolled when the record has no IPs, as at a sandbox's end).
   */
  removeSandbox(key: string, containerId: string): void {
    if (this.#sandboxes.get(key)?.containerId !== containerId) return;
    this.#dropSandbox(key);
    this.#applyView(this.#view());
  }

  #dropSandbox(key: string): void {
    if (this.#sandboxes.delete(key)) this.#sandboxChanges++;
  }

  /**
   * The source's view with the sandboxes standing in for their pods' records (withSandboxes), its pod maps reused
   * while neither the source's nor the sandboxes changed: the data plane sends a pod map to its workers, which
   * rebuild their workload index and re-check open connections, only when the map is a new one (mesh-dataplane.ts).
   */
  #view(): ClusterState {
    const source = this.#source;
    const last = this.#patched;
    if (last?.pods === source.pods && last.nodePods === source.nodePods && last.changes === this.#sandboxChanges) {
      return { ...source, pods: last.view.pods, ...(source.nodePods ? { nodePods: last.view.nodePods } : {}) };
    }
    const view = withSandboxes(source, this.#sandboxes);
    this.#patched = { pods: source.pods, nodePods: source.nodePods, changes: this.#sandboxChanges, view };
    return view;
  }

  #applyView(next: ClusterState): void {
    const diff = diffEnrollment(this.#state, next, this.#o.nodeName);
    if (next.authorizationPolicies !== this.#state.authorizationPolicies) {
      this.#policyWarnings.report(next.authorizationPolicies, this.#o.logger);
    }
    this.#state = next;
    this.#o.proxy.setState(next);
    for (const pod of diff.unenroll) this.#unenroll(pod);
    for (const { previous } of diff.reenroll) this.#unenroll(previous);
    for (const { previous, current } of diff.updated) {
      if (previous.serviceAccount !== current.serviceAccount && this.#certified.has(objectKey(current))) {
        this.#releaseCertificate(previous);
        this.#background(this.#acquire(current));
      }
    }
    for (const pod of [...diff.enroll, ...diff.reenroll.map((c) => c.current)]) this.#enroll(pod);
    this.#prefetch(next);
  }

  /**
   * Certificates for this node's meshed pods whose sandbox has no IPs yet: the API places a pod on the node before
   * the kubelet creates its sandbox, so its key and signing (~100-130 ms, most of a first ADD: p50 248 ms without,
   * 60 ms with the certificate held) are done by the time the CNI plugin asks. The reference passes to the
   * enrollment, or is released when the pod leaves without one.
   */
  #prefetch(next: ClusterState): void {
    const enrolled = new Set<string>();
    const pending = new Map<string, PodRecord>();
    for (const pod of podsOfNode(next, this.#o.nodeName)) {
      if (!isMeshedPod(pod, next)) continue;
      if (pod.ips.length > 0) enrolled.add(objectKey(pod));
      else pending.set(objectKey(pod), pod);
    }
    for (const [key, pod] of this.#prefetched) {
      // A pending pod whose service account changed holds the old identity's certificate: take the new one.
      if (pending.get(key)?.serviceAccount === pod.serviceAccount) continue;
      this.#prefetched.delete(key);
      if (!enrolled.has(key)) this.#releaseCertificate(pod);
    }
    for (const [key, pod] of pending) {
      if (this.#certified.has(key)) continue;
      try {
        identityOfPod(pod, this.#o.trustDomain);
      } catch {
        continue;
      }
      this.#prefetched.set(key, pod);
      this.#background(this.#acquire(pod));
    }
  }

  /** Resolves once every certificate request started so far has been answered (issued or failed). */
  async settled(): Promise<void> {
    while (this.#pending.size > 0) await Promise.all(this.#pending);
  }

  /**
   * Stop serving, leaving every pod's rules in place: their traffic is refused until an agent returns. Resolves
   * once the data plane stopped (its worker threads exited).
   */
  stop(): Promise<void> {
    this.#stopAccepting();
    const stopped = this.#o.proxy.close();
    this.#o.certs.close();
    this.#o.namespaces.releaseAll();
    return stopped;
  }

  /**
   * Stop as an agent being replaced does: stop accepting (the listeners close, and the kernel hands what was
   * queued on them to a new agent's listeners beside them, enroller.ts), send GOAWAY on every HBONE session both
   * ways so peers open their next ones to whoever listens now, serve what is open for at most `ms`, then tear
   * down what is left. Rules stay, as in stop(). Resolves with how many connections were left and how long it took.
   */
  async drain(ms: number): Promise<{ left: number; seconds: number }> {
    this.#stopAccepting();
    const drained = await this.#o.proxy.drain(ms);
    await this.stop();
    return drained;
  }

  /** No enrollment work from now on, and no new connection: the in-pod listeners close; the rules stay. */
  #stopAccepting(): void {
    this.#stopped = true;
    for (const t of this.#timers) clearInterval(t);
    this.#o.redirector.closeListenersOnly();
  }

  #background(work: Promise<unknown>): void {
    this.#pending.add(work);
    void work.finally(() => this.#pending.delete(work));
  }

  /** Rules and listeners now; the certificate in the background. */
  #enroll(pod: PodRecord): void {
    const key = objectKey(pod);
    const started = process.hrtime.bigint();
    let identity: SpiffeId;
    try {
      identity = identityOfPod(pod, this.#o.trustDomain);
    } catch (err) {
      this.#fail(
        pod,
        "invalid_identity",
        err,
        "pod's identity cannot be formed; not enrolled until its record changes",
      );
      return;
    }
    const found = this.#o.namespaces.resolve({ key, uid: pod.uid, ips: pod.ips, ...this.#pathOf(pod) });
    if (!found.ok) {
      this.#fail(pod, found.reason);
      return;
    }
    // Rules in force from another agent (being replaced, or crashed): its listeners, or none, serve the pod until
    // this one has the pod's certificate. Joining their SO_REUSEPORT groups before would have the kernel hand this
    // agent connections it can only refuse.
    const certified = this.#o.certs.material(identity) !== undefined;
    if (!certified && this.#o.redirector.enrolledByAnother({ pod, netns: found.netns })) {
      this.#certificateFirst(pod, started);
      return;
    }
    this.#redirect(pod, found.netns, started);
  }

  /** The pod's certificate, then its listeners and rules, if it is still to be enrolled by then. */
  #certificateFirst(pod: PodRecord, started: bigint): void {
    const key = objectKey(pod);
    if (this.#awaitingCertificate.has(key)) {
      this.#awaitingCertificate.set(key, pod);
      return;
    }
    this.#awaitingCertificate.set(key, pod);
    this.#background(
      this.#acquire(pod).then((issued) => {
        const current = this.#awaitingCertificate.get(key);
        this.#awaitingCertificate.delete(key);
        if (!current || this.#stopped) return;
        if (!issued) {
          this.#fail(current, "no_certificate");
          return;
        }
        const found = this.#o.namespaces.resolve({
          key,
          uid: current.uid,
          ips: current.ips,
          ...this.#pathOf(current),
        });
        if (!found.ok) {
          this.#fail(current, found.reason);
          return;
        }
        this.#redirect(current, found.netns, started);
      }),
    );
  }

  /**
   * The pod is not enrolled, for `reason` (readiness, metrics and /config_dump say so). With `err`, `what` is logged,
   * once per reason; without, the caller logs, or the namespace registry already did (throttled).
   */
  #fail(pod: PodRecord, reason: string, err?: unknown, what = ""): void {
    const key = objectKey(pod);
    const before = this.#failed.get(key)?.reason;
    this.#failed.set(key, { pod, reason });
    this.#o.enrollment?.failed(pod, reason);
    if (err !== undefined && before !== reason) this.#o.logger.error({ pod: key, err, reason }, what);
  }

  #redirect(pod: PodRecord, netns: HeldNetnsRef, started: bigint): void {
    const key = objectKey(pod);
    const log = this.#o.logger.child({ pod: key });
    try {
      this.#o.redirector.enroll({ pod, netns }, this.#o.proxy.listenerFactory);
    } catch (err) {
      const reason = err instanceof EnrollmentError ? err.code : "unexpected";
      this.#fail(
        pod,
        reason,
        err,
        "enrollment failed; the pod's traffic is not redirected, retrying in the background",
      );
      return;
    }
    this.#failed.delete(key);
    const sandbox = this.#sandboxes.get(key);
    const source = sandbox !== undefined && sandbox.netns === pod.netns ? "cni" : "api";
    this.#enrollments.set(key, { source, at: new Date() });
    const redirected = Number(process.hrtime.bigint() - started) / 1e9;
    const acquired = this.#certified.has(key)
      ? (this.#acquiring.get(key) ?? Promise.resolve(true))
      : this.#acquire(pod);
    this.#background(
      acquired.then((identity) => {
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        this.#o.enrollment?.enrolled(pod, seconds);
        log.info({ ips: pod.ips, netns: netns.description, source, identity, redirected, seconds }, "pod enrolled");
      }),
    );
  }

  #acquire(pod: PodRecord): Promise<boolean> {
    const key = objectKey(pod);
    const acquired = this.#acquireNow(pod);
    this.#acquiring.set(key, acquired);
    void acquired.finally(() => {
      if (this.#acquiring.get(key) === acquired) this.#acquiring.delete(key);
    });
    return acquired;
  }

  async #acquireNow(pod: PodRecord): Promise<boolean> {
    // The reference is taken whether or not the CA answers now (the manager keeps retrying for it).
    this.#certified.add(objectKey(pod));
    try {
      await this.#o.certs.acquire(identityOfPod(pod, this.#o.trustDomain), pod);
      return true;
    } catch (err) {
      this.#o.logger.warn(
        { err, pod: objectKey(pod) },
        "no certificate yet; the pod's meshed traffic is refused until the CA answers (retrying)",
      );
      return false;
    }
  }

  #unenroll(pod: PodRecord): void {
    const key = objectKey(pod);
    this.#awaitingCertificate.delete(key);
    const wasFailing = this.#failed.delete(key);
    this.#enrollments.delete(key);
    try {
      this.#o.redirector.unenroll(key);
      if (!wasFailing) this.#o.enrollment?.unenrolled(pod);
      this.#o.logger.info({ pod: key }, "pod unenrolled; its traffic is no longer redirected");
    } catch (err) {
      this.#o.logger.error({ err, pod: key }, "unenrollment failed; rules may remain in the pod (traffic refused)");
    } finally {
      this.#o.namespaces.release(key);
      this.#releaseCertificate(pod);
    }
  }

  #releaseCertificate(pod: PodRecord): void {
    if (this.#certified.delete(objectKey(pod))) {
      this.#o.certs.release(identityOfPod(pod, this.#o.trustDomain), pod);
    }
  }

  /** Enrolled pods whose sandbox was replaced get enrolled in the new namespace; those whose namespace is gone wait. */
  #verifyNamespaces(): void {
    for (const { pod } of this.#o.redirector.enrolled()) {
      const key = objectKey(pod);
      const found = this.#o.namespaces.resolve({ key, uid: pod.uid, ips: pod.ips, ...this.#pathOf(pod) });
      if (found.ok && !found.replaced) continue;
      // The namespace it was enrolled in is gone, and its rules with it: its listeners go too.
      this.#o.redirector.abandon(key);
      this.#enrollments.delete(key);
      const log = this.#o.logger.child({ pod: key });
      if (!found.ok) {
        this.#fail(pod, found.reason);
        log.warn({ reason: found.reason }, "the pod's network namespace is gone; enrolling it again once it is found");
        continue;
      }
      log.warn({ netns: found.netns.description }, "the pod's sandbox was replaced; enrolling it in the new namespace");
      this.#enroll(pod);
    }
  }

  #pathOf(pod: PodRecord): { netns?: string } {
    // A sandbox's path comes from the container runtime through the CNI plugin, not from a pod author.
    const trusted = this.#o.netnsPaths || this.#sandboxes.get(objectKey(pod))?.netns === pod.netns;
    return pod.netns && trusted ? { netns: pod.netns } : {};
  }

  #retryFailed(): void {
    for (const { pod } of [...this.#failed.values()]) this.#enroll(pod);
  }
}
