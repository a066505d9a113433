/** Builds a node agent from its configuration and runs it until stopped. */

import { getrlimit, RLIMIT_NOFILE } from "../../native-bindings/io.js";
import { ConnectionTracker } from "../admin/connection-tracker.js";
import { type AgentServers, startAgentServers } from "../admin/servers.js";
import { CniServer } from "../cni/server.js";
import { agentLimitFor } from "../dataplane/connection-limits.js";
import { MeshDataplane } from "../dataplane/mesh-dataplane.js";
import { defaultWorkerCount } from "../dataplane/worker-count.js";
import { RemoteCertificateSource } from "../identity/ca-client.js";
import { loadOrCreateCa } from "../identity/ca-files.js";
import { CertManager } from "../identity/cert-manager.js";
import { type CertificateSource, EmbeddedCertificateSource } from "../identity/certificate-source.js";
import type { ClusterState } from "../kube/cluster-state.js";
import { openClusterSource } from "../kube/open-source.js";
import type { ClusterSource } from "../kube/source.js";
import type { Logger } from "../log.js";
import { accessLog } from "../metrics/access-log.js";
import { AgentMetrics, type AgentMetricsOptions, type DrainOutcome } from "../metrics/agent-metrics.js";
import { NetnsRegistry } from "../netns/netns-registry.js";
import { observers, type ProxyObserver } from "../proxy/observer.js";
import { Redirector } from "../redirect/enroller.js";
import type { AgentConfig } from "./config.js";
import { type EnrollmentObserver, enrollmentObservers, NodeAgent } from "./node-agent.js";

export interface RunningAgent {
  config: AgentConfig;
  agent: NodeAgent;
  certs: CertManager;
  proxy: MeshDataplane;
  redirector: Redirector;
  source: ClusterSource;
  metrics: AgentMetrics;
  connections: ConnectionTracker;
  /** Bound addresses (host:port) of the metrics, admin and readiness servers. */
  endpoints: { metrics: string; admin: string; ready: string };
  /** Stop serving (pods' rules stay: their traffic is refused until an agent returns). */
  stop(): Promise<void>;
  /**
   * Stop accepting, serve open connections for at most `ms` (GOAWAY on every HBONE session), then stop (NodeAgent
   * drain). Metrics, admin and readiness stay up throughout and for `reportMs` more once the outcome is counted
   * (ambit_drains_total), so that a scrape can read it. Resolves with the outcome, the connections that were left
   * and the seconds the drain took. stop() during a drain counts it `interrupted`.
   */
  drain(ms: number, reportMs?: number): Promise<{ outcome: DrainOutcome; left: number; seconds: number }>;
}

export interface AgentHooks {
  observer?: ProxyObserver;
  enrollment?: EnrollmentObserver;
  metrics?: AgentMetricsOptions;
  /** Called once the HTTP servers listen, before the cluster source starts (readiness is 503 until it has). */
  serving?: (endpoints: RunningAgent["endpoints"]) => void | Promise<void>;
}

async function certificateSource(config: AgentConfig, log: Logger): Promise<CertificateSource> {
  if (config.caUrl) {
    return new RemoteCertificateSource({
      url: config.caUrl,
      caBundleFile: config.caBundleFile as string,
      tokenFile: config.caTokenFile as string,
    });
  }
  const ca = await loadOrCreateCa(config.caDir as string, {
    trustDomain: config.trustDomain,
    leafLifetimeSec: config.certLifetimeSec,
    logger: log,
  });
  return new EmbeddedCertificateSource(ca);
}

export async function startAgent(config: AgentConfig, log: Logger, hooks: AgentHooks = {}): Promise<RunningAgent> {
  const source = await certificateSource(config, log);
  const certs = new CertManager({ source, logger: log.child({ component: "certs" }) });
  const metrics = new AgentMetrics(hooks.metrics);
  metrics.watchCerts(certs);
  const connections = new ConnectionTracker();
  const observed: ProxyObserver[] = [metrics, connections, accessLog(log.child({ component: "access" }))];
  if (hooks.observer) observed.push(hooks.observer);
  const proxy = new MeshDataplane({
    trustDomain: config.trustDomain,
    certs,
    observer: observers(...observed),
    logger: log.child({ component: "proxy" }),
    rootNamespace: config.rootNamespace,
    workers: config.workers ?? defaultWorkerCount(),
    connectionLimits: {
      perPod: config.maxConnectionsPerPod,
      perAgent: config.maxConnections ?? agentLimitFor(getrlimit(RLIMIT_NOFILE).soft),
    },
  });
  metrics.watchDataplane(proxy.counters);

  const redirector = new Redirector({ logger: log.child({ component: "redirect" }), hostRules: config.hostRules });
  const enrollment = hooks.enrollment ? enrollmentObservers(metrics, hooks.enrollment) : metrics;
  const agent = new NodeAgent({
    nodeName: config.nodeName,
    trustDomain: config.trustDomain,
    certs,
    redirector,
    proxy,
    namespaces: new NetnsRegistry({ logger: log.child({ component: "netns" }) }),
    netnsPaths: config.source.kind === "manifests",
    logger: log.child({ component: "agent" }),
    enrollment,
  });
  metrics.watchNotEnrolled(() => agent.failedPods());
  let sourceStarted = false;
  let servers: AgentServers | undefined;
  let cluster: ClusterSource | undefined;
  let cni: CniServer | undefined;
  let draining = false;
  let drainOutcome: DrainOutcome | undefined;
  const drainEnded = (outcome: DrainOutcome) => {
    if (drainOutcome) return;
    drainOutcome = outcome;
    metrics.drainEnded(outcome);
  };
  // The servers close before the registry is cleared: a scrape while stopping reads the last values, not nothing.
  const shutdown = async () => {
    if (draining) drainEnded("interrupted");
    await cni?.close();
    cluster?.close();
    await agent.stop();
    await servers?.close();
    metrics.close();
  };
  // Metrics and admin stay up while draining: the connections left are still seen there. The CNI socket is the new
  // agent's already (CniServer.listen takes the path over), so closing it here only stops this agent's.
  const drain = async (ms: number, reportMs = 0) => {
    draining = true;
    metrics.drainStarted();
    servers?.notReady();
    await cni?.close();
    cluster?.close();
    const drained = await agent.drain(ms);
    drainEnded(drained.left === 0 ? "drained" : "period_over");
    await new Promise((resolve) => setTimeout(resolve, reportMs));
    await servers?.close();
    metrics.close();
    return { outcome: drainOutcome ?? "interrupted", ...drained };
  };
  try {
    const clusterSource = await openClusterSource(config.source, {
      nodeName: config.nodeName,
      logger: log,
      registry: metrics.registry,
    });
    cluster = clusterSource;
    // Servers first: while the CA or the cluster source is slow, probes get a 503 with reasons, not "connection refused".
    servers = await startAgentServers({
      metricsAddress: config.metricsAddress,
      adminAddress: config.adminAddress,
      readyAddress: config.readyAddress,
      registry: metrics.registry,
      tracker: connections,
      ...(config.probeDir ? { probeDir: config.probeDir } : {}),
      waitForPorts: config.waitForPorts === true,
      logger: log.child({ component: "admin" }),
      parts: {
        nodeName: config.nodeName,
        trustDomain: config.trustDomain,
        rootNamespace: config.rootNamespace,
        agent,
        certs,
        redirector,
        sourceStarted: () => sourceStarted,
        sourceHealth: () => clusterSource.health(),
      },
    });
    const endpoints = { metrics: servers.metrics, admin: servers.admin, ready: servers.ready };
    log.info(endpoints, "serving metrics, admin and readiness");
    await hooks.serving?.(endpoints);
    // Before the cluster source starts: a sandbox's ADD that comes first waits for the pod's record (bounded).
    if (config.cniSocket) {
      cni = await CniServer.listen({ path: config.cniSocket, agent, metrics, logger: log.child({ component: "cni" }) });
      log.info({ path: config.cniSocket }, "serving the CNI plugin");
    }
    const apply = (state: ClusterState) => {
      try {
        agent.apply(state);
      } catch (err) {
        log.error({ err }, "applying the cluster's state failed; the next change retries");
      }
    };
    clusterSource.on("change", apply);
    apply(await clusterSource.start());
    // The first view's certificates too, before calling the agent started (readiness waits for them anyway), and
    // the data plane's threads.
    await agent.settled();
    await proxy.ready();
    sourceStarted = true;
    log.info({ node: config.nodeName, enrolled: redirector.enrolled().length }, "agent started");

    return {
      config,
      agent,
      certs,
      proxy,
      redirector,
      source: clusterSource,
      metrics,
      connections,
      endpoints,
      stop: shutdown,
      drain,
    };
  } catch (err) {
    await shutdown();
    throw err;
  }
}
