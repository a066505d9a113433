/**
 * The data plane's main-thread side (data path v2): N worker threads serve every enrolled pod's listeners, each
 * with its own epoll loop (worker.ts, mesh-worker.ts), and this class keeps them told: the cluster's state as it
 * changes, each pod as it is enrolled (its record, a descriptor of its network namespace, its listening sockets),
 * and the current certificate of each identity the node's pods hold. Workers report back in batches (event-batch.ts),
 * replayed here into the agent's observers (metrics, access log, connection table), and count into shared counters.
 *
 * Descriptors: the listening sockets and a duplicate of each pod's namespace descriptor are this class's; a worker
 * only uses them until it answered the message that takes them away (unlisten, pod_gone), and only then are they
 * closed, so no worker can ever use a number the process has since given to another file.
 */
import { closeFd, dupFd, getsockname } from "../../native-bindings/io.js";
import { exitProcessNow } from "../../native-bindings/libc.js";
import { decodeSockaddr } from "../../native-bindings/sockaddr.js";
import type { CertificateMaterial } from "../identity/cert-manager.js";
import { formatSpiffeId, type SpiffeId } from "../identity/spiffe.js";
import { type ClusterState, emptyClusterState } from "../kube/cluster-state.js";
import { DEFAULT_ROOT_NAMESPACE } from "../kube/peer-authentication.js";
import { objectKey } from "../kube/records.js";
import { type Logger, silentLogger } from "../log.js";
import { ProxyError } from "../proxy/errors.js";
import { nullObserver, type ProxyObserver } from "../proxy/observer.js";
import { DEFAULT_TUNING, type HboneTuning } from "../proxy/tuning.js";
import { workloadOf } from "../proxy/workload-index.js";
import type { EnrollTarget, ListenerKind, ServedListener } from "../redirect/enroller.js";
import { PROXY_MARK } from "../redirect/ports.js";
import { ConnectionLimitTable, DEFAULT_PER_POD_LIMIT, MAX_DEFAULT_AGENT_LIMIT } from "./connection-limits.js";
import { replayEvents } from "./event-batch.js";
import { DataplaneWorkerPool } from "./worker-pool.js";
import type { StateChanges } from "./worker-protocol.js";

/** What the data plane needs of the certificate manager. */
export interface IdentityMaterials {
  material(id: SpiffeId): CertificateMaterial | undefined;
  on(event: "issued" | "rotated" | "expired", listener: () => void): unknown;
}

export interface MeshDataplaneOptions {
  trustDomain: string;
  certs: IdentityMaterials;
  /** Worker threads (default 1; the agent passes --workers, or the CPUs it may use). */
  workers?: number;
  observer?: ProxyObserver;
  logger?: Logger;
  tuning?: Partial<HboneTuning>;
  mark?: number;
  rootNamespace?: string;
  /**
   * Connections per pod and per agent at most (connection-limits.ts); default DEFAULT_PER_POD_LIMIT and
   * MAX_DEFAULT_AGENT_LIMIT (the agent derives its own from RLIMIT_NOFILE: agentLimitFor).
   */
  connectionLimits?: { perPod?: number; perAgent?: number };
}

interface PodEntry {
  netnsFd: number;
  id: SpiffeId;
  /** Listeners of this enrollment not closed yet; the last one's close tells the workers the pod is gone. */
  open: number;
}

/** How often a drain looks whether connections are left: an agent that drained exits within this of the last one. */
const DRAIN_POLL_MS = 100;

const STATE_KEYS = [
  "namespaces",
  "pods",
  "nodePods",
  "services",
  "endpointSlices",
  "peerAuthentications",
  "authorizationPolicies",
] as const;

export class MeshDataplane {
  readonly #pool: DataplaneWorkerPool;
  readonly #log: Logger;
  readonly #certs: IdentityMaterials;
  readonly #trustDomain: string;
  readonly #pods = new Map<string, PodEntry>();
  readonly #limits: ConnectionLimitTable;
  /** Serial each worker was last sent per identity (null: told it has none). */
  readonly #sent = new Map<string, string | null>();
  #state: ClusterState = emptyClusterState();
  #closing: Promise<void> | undefined;
  readonly #ready: Promise<void>;

  constructor(opts: MeshDataplaneOptions) {
    const observer = opts.observer ?? nullObserver;
    this.#log = opts.logger ?? silentLogger;
    this.#certs = opts.certs;
    this.#trustDomain = opts.trustDomain;
    this.#limits = new ConnectionLimitTable({
      perPod: opts.connectionLimits?.perPod ?? DEFAULT_PER_POD_LIMIT,
      perAgent: opts.connectionLimits?.perAgent ?? MAX_DEFAULT_AGENT_LIMIT,
    });
    this.#pool = new DataplaneWorkerPool(opts.workers ?? 1, {
      onEvents: (events) => replayEvents(events, observer, this.#log),
      onUnexpectedExit: (code) => this.#workerLost(code),
      onFatal: (status) => this.#end(status),
    });
    this.#ready = this.#broadcast({
      type: "mesh",
      settings: {
        trustDomain: opts.trustDomain,
        rootNamespace: opts.rootNamespace ?? DEFAULT_ROOT_NAMESPACE,
        mark: opts.mark ?? PROXY_MARK,
        tuning: { ...DEFAULT_TUNING, ...opts.tuning },
        logLevel: this.#log.level,
        limits: this.#limits.ref(),
      },
    });
    const sync = () => this.#syncIdentities();
    opts.certs.on("issued", sync);
    opts.certs.on("rotated", sync);
    opts.certs.on("expired", sync);
  }

  /** Resolves once every worker thread serves. */
  ready(): Promise<void> {
    return this.#ready;
  }

  /** The workers' shared counters (AgentMetrics.watchDataplane exports them). */
  get counters() {
    return this.#pool.counters;
  }

  /** The connection limits in force and what counts against them now, over every worker. */
  get connectionLimits(): ConnectionLimitTable {
    return this.#limits;
  }

  /** The cluster as the source sees it now: which IPs are meshed, with which identity, Services and policies. */
  setState(state: ClusterState): void {
    const changes: Record<string, unknown> = {};
    let changed = false;
    for (const key of STATE_KEYS) {
      if (state[key] === this.#state[key]) continue;
      changes[key] = state[key];
      changed = true;
    }
    this.#state = state;
    if (changed) this.#send({ type: "state", changes: changes as StateChanges });
  }

  /** Resolves once everything the workers saw until now reached the observer (they report in batches). */
  reported(): Promise<void> {
    return this.#broadcast({ type: "flush" });
  }

  /** HBONE client sessions pooled now, over every worker (tests). */
  async pooledSessions(): Promise<number> {
    const stats = await this.#pool.stats();
    return stats.reduce((sum, s) => sum + s.pooledSessions, 0);
  }

  /** OpenSSL contexts held now, per worker (tests: they are built on an identity's first connection). */
  async tlsContexts(): Promise<number[]> {
    return (await this.#pool.stats()).map((s) => s.tlsContexts);
  }

  /** Serves each in-pod listener the redirector opens: the pod's first tells the workers about the pod. */
  readonly listenerFactory = (kind: ListenerKind, family: 4 | 6, target: EnrollTarget, fd: number): ServedListener => {
    const key = objectKey(target.pod);
    let entry = this.#pods.get(key);
    if (!entry) {
      const workload = workloadOf(target.pod, this.#trustDomain);
      if (!workload) {
        closeFd(fd);
        throw new ProxyError("no_identity", `${key}: invalid identity`);
      }
      entry = { netnsFd: dupFd(target.netns.fd), id: workload.id, open: 0 };
      this.#pods.set(key, entry);
      this.#send({
        type: "pod",
        key,
        pod: target.pod,
        netnsFd: entry.netnsFd,
        netnsDescription: target.netns.description,
        limitSlot: this.#limits.assign(key),
      });
      this.#syncIdentities();
    }
    const pod = entry;
    pod.open++;
    this.#send({ type: "listen", key, kind, family, fd });
    let open = true;
    return {
      get listening() {
        return open;
      },
      address: () => {
        if (!open) return undefined;
        const a = decodeSockaddr(getsockname(fd));
        return `${a.address}:${a.port}`;
      },
      close: () => {
        if (!open) return;
        open = false;
        void this.#broadcast({ type: "unlisten", key, fd }).finally(() => closeFd(fd));
        if (--pod.open > 0) return;
        if (this.#pods.get(key) === pod) this.#pods.delete(key);
        void this.#broadcast({ type: "pod_gone", key }).finally(() => {
          closeFd(pod.netnsFd);
          // No worker counts new connections into the slot now; those still open release it as they close.
          if (!this.#pods.has(key)) this.#limits.release(key);
        });
        this.#syncIdentities();
      },
    };
  };

  /**
   * Waits, at most `ms`, until no connection counts against the agent any more (accepted sockets and HBONE streams
   * of every worker), checking every DRAIN_POLL_MS; close() ends the wait too. The caller closed the listeners
   * first (the pods' sessions got their GOAWAY then), so only connections open before can still be counted.
   * Resolves with how many were left: those close() will reset.
   */
  async drain(ms: number): Promise<{ left: number; seconds: number }> {
    const started = performance.now();
    const deadline = started + ms;
    while (!this.#closing && this.#limits.live > 0 && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, Math.min(DRAIN_POLL_MS, Math.max(1, deadline - performance.now()))));
    }
    return { left: this.#limits.live, seconds: (performance.now() - started) / 1000 };
  }

  /** Stops every worker (listeners, sessions and connections torn down), then closes the descriptors. */
  close(): Promise<void> {
    this.#closing ??= this.#pool.stop().then(() => {
      for (const entry of this.#pods.values()) closeFd(entry.netnsFd);
      this.#pods.clear();
    });
    return this.#closing;
  }

  /** Tells the workers each identity's current certificate, or that it has none, when that changed. */
  #syncIdentities(): void {
    const wanted = new Map<string, SpiffeId>();
    for (const entry of this.#pods.values()) wanted.set(formatSpiffeId(entry.id), entry.id);
    for (const [spiffe, id] of wanted) {
      const material = this.#certs.material(id);
      const serial = material?.serial ?? null;
      if (this.#sent.get(spiffe) === serial && this.#sent.has(spiffe)) continue;
      this.#sent.set(spiffe, serial);
      this.#send({
        type: "identity",
        spiffe,
        material: material ? { ...material, notAfter: material.notAfter.getTime() } : null,
      });
    }
    for (const spiffe of [...this.#sent.keys()]) {
      if (wanted.has(spiffe)) continue;
      this.#sent.delete(spiffe);
      this.#send({ type: "identity", spiffe, material: null });
    }
  }

  #send(command: Parameters<DataplaneWorkerPool["broadcast"]>[0]): void {
    void this.#broadcast(command);
  }

  #broadcast(command: Parameters<DataplaneWorkerPool["broadcast"]>[0]): Promise<void> {
    if (this.#closing) return Promise.resolve();
    return this.#pool.broadcast(command).catch((err: unknown) => {
      if (this.#closing) return;
      this.#log.error(
        { err, command: command.type },
        "a data-plane worker refused a control message; its pods' traffic may be refused",
      );
    });
  }

  /**
   * A worker that ends unasked took its share of every pod's connections with it: the process ends, and the
   * restarted agent serves every pod again. (One that could not return to its own network namespace asks for the
   * end itself, onFatal: anything it would open next could be in a pod's.)
   */
  #workerLost(code: number): void {
    this.#log.fatal(
      { exitCode: code },
      "a data-plane worker thread ended unexpectedly; exiting so the restarted agent serves every pod again (their traffic is refused meanwhile)",
    );
    this.#end(1);
  }

  /** A worker's fatal line (its last event batch) came before this: the process ends now, no exit handlers. */
  #end(status: number): never {
    return exitProcessNow(status);
  }
}
