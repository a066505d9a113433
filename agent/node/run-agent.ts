/** Builds a node agent from its configuration and runs it until stopped. */

import { RemoteCertificateSource } from "../identity/ca-client.js";
import { loadOrCreateCa } from "../identity/ca-files.js";
import { CertManager } from "../identity/cert-manager.js";
import { type CertificateSource, EmbeddedCertificateSource } from "../identity/certificate-source.js";
import { PodFileSource } from "../kube/pod-file-source.js";
import type { Logger } from "../log.js";
import { nullObserver, type ProxyObserver } from "../proxy/observer.js";
import { MeshProxy } from "../proxy/proxy.js";
import { Redirector } from "../redirect/enroller.js";
import type { AgentConfig } from "./config.js";
import { type EnrollmentObserver, NodeAgent } from "./node-agent.js";

export interface RunningAgent {
  config: AgentConfig;
  agent: NodeAgent;
  certs: CertManager;
  proxy: MeshProxy;
  redirector: Redirector;
  source: PodFileSource;
  /** Stop serving (pods' rules stay: their traffic is refused until an agent returns). */
  stop(): Promise<void>;
}

export interface AgentHooks {
  observer?: ProxyObserver;
  enrollment?: EnrollmentObserver;
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
  const proxy = new MeshProxy({
    trustDomain: config.trustDomain,
    certs,
    observer: hooks.observer ?? nullObserver,
    logger: log.child({ component: "proxy" }),
  });
  // The bundle is needed before the first handshake; certificates also carry it, and rotations refresh it.
  proxy.setTrustBundle(await source.trustBundle());
  const refreshBundle = () => void certs.trustBundlePem().then((pem) => proxy.setTrustBundle(pem));
  certs.on("issued", refreshBundle);
  certs.on("rotated", refreshBundle);

  const redirector = new Redirector({ logger: log.child({ component: "redirect" }), hostRules: config.hostRules });
  const agent = new NodeAgent({
    nodeName: config.nodeName,
    trustDomain: config.trustDomain,
    certs,
    redirector,
    proxy,
    logger: log.child({ component: "agent" }),
    ...(hooks.enrollment ? { enrollment: hooks.enrollment } : {}),
  });
  const pods = new PodFileSource({ path: config.podFile, logger: log });
  pods.on("change", (state) => void agent.apply(state));
  pods.on("error", (err) => log.error({ err }, "pod file unusable; keeping the last good state"));
  await agent.apply(await pods.start());
  log.info({ node: config.nodeName, enrolled: redirector.enrolled().length }, "agent started");

  return {
    config,
    agent,
    certs,
    proxy,
    redirector,
    source: pods,
    stop: async () => {
      pods.close();
      agent.stop();
    },
  };
}
