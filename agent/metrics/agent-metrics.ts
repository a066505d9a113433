/**
 * The agent's Prometheus metrics, on a registry of its own (two agents in one process, as in tests, must not
 * share series). Fed by the proxy (ProxyObserver), the node agent (EnrollmentObserver) and the CertManager events.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { CniCommandLabel, CniResultLabel } from "../cni/request-labels.js";
import type { SharedCounters } from "../dataplane/shared-counters.js";
import type { CertManager } from "../identity/cert-manager.js";
import { objectKey, type PodRecord } from "../kube/records.js";
import type { EnrollmentObserver } from "../node/node-agent.js";
import type { ConnectionEnd, ConnectionInfo, Denial, HandshakeRole, ProxyObserver } from "../proxy/observer.js";
import { handshakeResult, refusalReason } from "../proxy/reasons.js";
import { CpuSampler } from "./cpu-sampler.js";
import { registerDataplaneCounters } from "./dataplane-metrics.js";
import { TRAFFIC_LABELS, type TrafficLabels, trafficLabels, workloadKey, workloadsOf } from "./labels.js";
import { SeriesIndex } from "./series-index.js";

export interface AgentMetricsOptions {
  /** CPU attribution window; default 5 s. */
  cpuWindowMs?: number;
  /** Register prom-client's default process metrics (CPU, memory, event-loop lag); default true. */
  defaultMetrics?: boolean;
}

// 50 us .. ~1.6 s, doubling: a resumed session on loopback is tens of microseconds, a cold RSA one across a
// loaded node hundreds of milliseconds.
const HANDSHAKE_BUCKETS = Array.from({ length: 16 }, (_, i) => 50e-6 * 2 ** i);
const ENROLL_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
// A DEL or a pod outside the mesh is a few milliseconds; an ADD's rules and listeners took 12-26 ms, its p99 end to
// end 81 ms with the certificate held; the longest waits are 5 s for a record plus 3 s for a certificate.
const CNI_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * How a SIGTERM drain ended: `drained`, every open connection finished within the drain period; `period_over`, the
 * period ended and what was left was reset; `interrupted`, a second signal stopped the agent at once.
 */
export type DrainOutcome = "drained" | "period_over" | "interrupted";

/** How often the event loop's lag is sampled (nodejs_eventloop_lag_*). */
export const EVENT_LOOP_SAMPLE_MS = 1000;

export class AgentMetrics implements ProxyObserver, EnrollmentObserver {
  readonly registry = new Registry();
  readonly #cpu: CpuSampler;
  readonly #handshakes: Counter<"role" | "result">;
  readonly #handshakeSeconds: Histogram<"role">;
  readonly #opened: Counter<(typeof TRAFFIC_LABELS)[number]>;
  readonly #closed: Counter<(typeof TRAFFIC_LABELS)[number]>;
  readonly #sent: Counter<(typeof TRAFFIC_LABELS)[number]>;
  readonly #received: Counter<(typeof TRAFFIC_LABELS)[number]>;
  readonly #refused: Counter<"pod" | "direction" | "reason">;
  readonly #denials: Counter<"namespace" | "workload" | "policy">;
  readonly #enrolled: Gauge;
  readonly #enrollSeconds: Histogram;
  readonly #enrollFailures: Counter<"reason">;
  readonly #cniRequests: Counter<"command" | "result">;
  readonly #cniSeconds: Histogram<"command">;
  readonly #drains: Counter<"outcome">;
  readonly #draining: Gauge;
  readonly #series = new SeriesIndex<TrafficLabels>(workloadsOf);
  /** Workload key -> this node's enrolled pods of it: series go when the last one leaves, not with each replica. */
  readonly #localPods = new Map<string, Set<string>>();
  /** Local workloads (workload key) -> the policy label values of their denial series, for removal. */
  readonly #denialSeries = new Map<string, Set<string>>();
  /** Pods with refusal series (by pod label), for removal on unenrollment. */
  readonly #refusedSeries = new Map<string, Set<string>>();
  readonly #certsWatched: Array<() => void> = [];

  constructor(options: AgentMetricsOptions = {}) {
    const registers = [this.registry];
    if (options.defaultMetrics !== false) {
      // prom-client samples event-loop lag every 10 ms by default: 100 wake-ups a second, which were most of an
      // idle agent's CPU (1.4-1.8% of a core with 100 pods enrolled). Once a second still shows a stalled loop.
      collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
    }
    this.#cpu = new CpuSampler({ registry: this.registry, windowMs: options.cpuWindowMs ?? 5000 });
    this.#handshakes = new Counter({
      name: "ambit_tls_handshakes_total",
      help: "HBONE mutual TLS handshakes by role (client: outbound tunnel, server: inbound) and result",
      labelNames: ["role", "result"],
      registers,
    });
    this.#handshakeSeconds = new Histogram({
      name: "ambit_tls_handshake_duration_seconds",
      help: "Duration of HBONE mutual TLS handshakes",
      labelNames: ["role"],
      buckets: HANDSHAKE_BUCKETS,
      registers,
    });
    const traffic = (name: string, help: string) =>
      new Counter({ name, help, labelNames: [...TRAFFIC_LABELS], registers });
    this.#opened = traffic("istio_tcp_connections_opened_total", "TCP connections opened");
    this.#closed = traffic("istio_tcp_connections_closed_total", "TCP connections closed");
    // Istio's direction convention: "sent" is the response (destination -> source), "received" the request.
    this.#sent = traffic("istio_tcp_sent_bytes_total", "Bytes sent during response (destination to source)");
    this.#received = traffic("istio_tcp_received_bytes_total", "Bytes received during request (source to destination)");
    this.#refused = new Counter({
      name: "ambit_connections_refused_total",
      help: "Connections refused before relaying, by enrolled pod, direction and reason",
      labelNames: ["pod", "direction", "reason"],
      registers,
    });
    this.#denials = new Counter({
      name: "ambit_policy_denials_total",
      help: "Inbound connections denied by AuthorizationPolicy, by destination workload and deciding policy",
      labelNames: ["namespace", "workload", "policy"],
      registers,
    });
    this.#enrolled = new Gauge({ name: "ambit_pods_enrolled", help: "Pods enrolled on this node", registers });
    this.#enrollSeconds = new Histogram({
      name: "ambit_enrollment_duration_seconds",
      help: "Time to enroll a pod (redirection and certificate)",
      buckets: ENROLL_BUCKETS,
      registers,
    });
    this.#enrollFailures = new Counter({
      name: "ambit_enrollment_failures_total",
      help: "Pod enrollment failures by reason",
      labelNames: ["reason"],
      registers,
    });
    this.#cniRequests = new Counter({
      name: "ambit_cni_requests_total",
      help: "Requests of the CNI plugin (ambit-cni) by command and result",
      labelNames: ["command", "result"],
      registers,
    });
    this.#cniSeconds = new Histogram({
      name: "ambit_cni_request_duration_seconds",
      help: "Time the agent took to answer a CNI plugin request (an ADD: until the pod's rules and listeners are in place)",
      labelNames: ["command"],
      buckets: CNI_BUCKETS,
      registers,
    });
    this.#drains = new Counter({
      name: "ambit_drains_total",
      help: "SIGTERM drains by outcome (drained, period_over: the connections left were reset, interrupted)",
      labelNames: ["outcome"],
      registers,
    });
    this.#draining = new Gauge({
      name: "ambit_draining",
      help: "1 from SIGTERM until the agent exits: listeners closed, open connections served until they end",
      registers,
    });
  }

  /** A CNI plugin request answered (agent/cni/server.ts). */
  cniRequest(command: CniCommandLabel, result: CniResultLabel, seconds: number): void {
    this.#cniRequests.inc({ command, result });
    this.#cniSeconds.observe({ command }, seconds);
  }

  drainStarted(): void {
    this.#draining.set(1);
  }

  drainEnded(outcome: DrainOutcome): void {
    this.#drains.inc({ outcome });
  }

  // ProxyObserver

  // Results and reasons arrive from the workers as plain strings: mapped onto their closed sets (proxy/reasons.ts)
  // here, where a value outside them would become a series.
  handshake(role: HandshakeRole, result: string, seconds: number): void {
    this.#handshakes.inc({ role, result: handshakeResult(result) });
    // Latency of failures would mix timeouts into the distribution; only completed handshakes are timed.
    if (result === "ok") {
      this.#handshakeSeconds.observe({ role }, seconds);
      this.#cpu.handshake();
    }
  }

  connectionOpened(info: ConnectionInfo): void {
    const labels = trafficLabels(info);
    this.#series.add(labels);
    this.#opened.inc(labels);
  }

  connectionClosed(info: ConnectionInfo, end: ConnectionEnd): void {
    const labels = trafficLabels(info);
    this.#series.add(labels);
    this.#closed.inc(labels);
    this.#sent.inc(labels, end.received);
    this.#received.inc(labels, end.sent);
    this.#cpu.bytes(end.sent + end.received);
  }

  connectionRefused(pod: string, direction: "outbound" | "inbound", value: string): void {
    const reason = refusalReason(value);
    this.#refused.inc({ pod, direction, reason });
    let set = this.#refusedSeries.get(pod);
    if (!set) {
      set = new Set();
      this.#refusedSeries.set(pod, set);
    }
    set.add(`${direction}\n${reason}`);
  }

  /**
   * Istio counts a denied connection as opened and closed with response_flags="DENY" (no bytes), so dashboards of
   * istio_tcp_* show denials next to the traffic. The policy label is a policy's `namespace/name` from the
   * cluster's own records or a reason of a closed set: bounded by the cluster, not by peers.
   */
  connectionDenied(info: ConnectionInfo, denial: Denial): void {
    const labels = trafficLabels(info, "DENY");
    this.#series.add(labels);
    this.#opened.inc(labels);
    this.#closed.inc(labels);
    const { namespace, workload } = info.destination;
    this.#denials.inc({ namespace, workload, policy: denial.policy });
    const key = workloadKey(namespace, workload);
    let set = this.#denialSeries.get(key);
    if (!set) {
      set = new Set();
      this.#denialSeries.set(key, set);
    }
    set.add(denial.policy);
  }

  // EnrollmentObserver

  enrolled(pod: PodRecord, seconds: number): void {
    const w = workloadKey(pod.namespace, pod.workload);
    let pods = this.#localPods.get(w);
    if (!pods) {
      pods = new Set();
      this.#localPods.set(w, pods);
    }
    pods.add(objectKey(pod));
    this.#enrollSeconds.observe(seconds);
    this.#updateEnrolled();
  }

  unenrolled(pod: PodRecord): void {
    const key = objectKey(pod);
    const w = workloadKey(pod.namespace, pod.workload);
    const pods = this.#localPods.get(w);
    pods?.delete(key);
    if (!pods || pods.size === 0) {
      this.#localPods.delete(w);
      for (const labels of this.#series.take(w)) {
        for (const c of [this.#opened, this.#closed, this.#sent, this.#received]) c.remove(labels);
      }
      const [namespace, workload] = [pod.namespace, pod.workload];
      for (const policy of this.#denialSeries.get(w) ?? []) this.#denials.remove({ namespace, workload, policy });
      this.#denialSeries.delete(w);
    }
    for (const dr of this.#refusedSeries.get(key) ?? []) {
      const [direction, reason] = dr.split("\n") as [string, string];
      this.#refused.remove({ pod: key, direction, reason });
    }
    this.#refusedSeries.delete(key);
    this.#updateEnrolled();
  }

  failed(_pod: PodRecord, reason: string): void {
    this.#enrollFailures.inc({ reason });
  }

  /** Certificate issuance, rotation and failure counters, and seconds until each identity's certificate expires. */
  watchCerts(certs: CertManager): void {
    const registers = [this.registry];
    const issued = new Counter({ name: "ambit_certificates_issued_total", help: "First certificates", registers });
    const rotated = new Counter({ name: "ambit_certificate_rotations_total", help: "Certificate renewals", registers });
    const failures = new Counter({
      name: "ambit_certificate_failures_total",
      help: "Failed certificate requests by reason",
      labelNames: ["reason"],
      registers,
    });
    const expired = new Counter({
      name: "ambit_certificates_expired_total",
      help: "Certificates that expired without a renewal",
      registers,
    });
    new Gauge({
      name: "ambit_certificate_expiry_seconds",
      help: "Seconds until the certificate of each identity on this node expires",
      labelNames: ["spiffe_id"],
      registers,
      // Computed at scrape time from the live snapshot: an identity that left has no series any more.
      collect() {
        this.reset();
        const now = Date.now();
        for (const s of certs.snapshot()) {
          if (s.notAfter) this.set({ spiffe_id: s.spiffeId }, (Date.parse(s.notAfter) - now) / 1000);
        }
      },
    });
    const onIssued = () => issued.inc();
    const onRotated = () => rotated.inc();
    const onFailed = (e: { error: Error }) => failures.inc({ reason: (e.error as { code?: string }).code ?? "error" });
    const onExpired = () => expired.inc();
    certs.on("issued", onIssued);
    certs.on("rotated", onRotated);
    certs.on("failed", onFailed);
    certs.on("expired", onExpired);
    this.#certsWatched.push(() => {
      certs.off("issued", onIssued);
      certs.off("rotated", onRotated);
      certs.off("failed", onFailed);
      certs.off("expired", onExpired);
    });
  }

  /**
   * Pods of this node that should be enrolled and are not, by reason (namespace not found yet, rules refused...),
   * read from the agent at scrape time: a pod that got enrolled or left has no series any more.
   */
  watchNotEnrolled(failedPods: () => Array<{ reason: string }>): void {
    new Gauge({
      name: "ambit_pods_not_enrolled",
      help: "Pods of this node that should be in the mesh but are not enrolled (retried), by reason",
      labelNames: ["reason"],
      registers: [this.registry],
      collect() {
        this.reset();
        const counts = new Map<string, number>();
        for (const { reason } of failedPods()) counts.set(reason, (counts.get(reason) ?? 0) + 1);
        for (const [reason, n] of counts) this.set({ reason }, n);
      },
    });
  }

  /**
   * The data-plane workers' counters (ambit_dataplane_*_total{worker}), read from their shared rows at scrape time.
   * Call once per SharedCounters: the metric names are fixed.
   */
  watchDataplane(counters: SharedCounters): void {
    registerDataplaneCounters(this.registry, counters);
  }

  /** Number of traffic label sets alive (what cardinality tests watch). */
  get trafficSeries(): number {
    return this.#series.size;
  }

  close(): void {
    this.#cpu.close();
    for (const off of this.#certsWatched) off();
    // Drops every series; a stopped agent in a long-lived process (tests) must not keep answering old values.
    this.registry.clear();
  }

  #updateEnrolled(): void {
    let n = 0;
    for (const pods of this.#localPods.values()) n += pods.size;
    this.#enrolled.set(n);
  }
}
