/**
 * A node agent assembled from its parts, for tests that need what the command line does not offer: a per-node view
 * of the cluster (to make one agent expect a different identity), proxy tuning (short handshake timeouts), or an
 * observer on the proxy. Unenrolled and stopped when the test ends.
 */
import type { ExecutionContext } from "ava";
import { MeshDataplane } from "../../../agent/dataplane/mesh-dataplane.js";
import type { MeshCa } from "../../../agent/identity/ca.js";
import { CertManager } from "../../../agent/identity/cert-manager.js";
import { EmbeddedCertificateSource } from "../../../agent/identity/certificate-source.js";
import type { ClusterState } from "../../../agent/kube/cluster-state.js";
import { objectKey } from "../../../agent/kube/records.js";
import { type Logger, silentLogger } from "../../../agent/log.js";
import { NetnsRegistry } from "../../../agent/netns/netns-registry.js";
import { NodeAgent } from "../../../agent/node/node-agent.js";
import { nullObserver, type ProxyObserver } from "../../../agent/proxy/observer.js";
import type { HboneTuning } from "../../../agent/proxy/tuning.js";
import { Redirector } from "../../../agent/redirect/enroller.js";
import { TEST_WORKERS } from "./data-path.js";

export interface TestNode {
  agent: NodeAgent;
  proxy: MeshDataplane;
  certs: CertManager;
  redirector: Redirector;
}

export async function nodeFor(
  t: ExecutionContext,
  options: {
    nodeName: string;
    ca: MeshCa;
    state: ClusterState;
    tuning?: Partial<HboneTuning>;
    observer?: ProxyObserver;
    logger?: Logger;
    /** Data-plane worker threads; default TEST_WORKERS. */
    workers?: number;
  },
): Promise<TestNode> {
  const logger = options.logger ?? silentLogger;
  const certs = new CertManager({ source: new EmbeddedCertificateSource(options.ca) });
  const proxy = new MeshDataplane({
    trustDomain: options.ca.trustDomain,
    certs,
    observer: options.observer ?? nullObserver,
    logger,
    ...(options.tuning ? { tuning: options.tuning } : {}),
    workers: options.workers ?? TEST_WORKERS,
  });
  const redirector = new Redirector({ logger });
  const agent = new NodeAgent({
    nodeName: options.nodeName,
    trustDomain: options.ca.trustDomain,
    certs,
    redirector,
    proxy,
    namespaces: new NetnsRegistry({ logger }),
    netnsPaths: true,
    logger,
  });
  t.teardown(async () => {
    for (const e of redirector.enrolled()) redirector.unenroll(objectKey(e.pod));
    await agent.stop();
  });
  agent.apply(options.state);
  await agent.settled();
  await proxy.ready();
  return { agent, proxy, certs, redirector };
}

/** An observer that records everything, for assertions. */
export function recorder() {
  const events = {
    handshakes: [] as Array<{ role: string; result: string }>,
    opened: [] as Parameters<ProxyObserver["connectionOpened"]>[0][],
    closed: [] as Array<Parameters<ProxyObserver["connectionClosed"]>>,
    refused: [] as Array<{ pod: string; direction: string; reason: string }>,
    denied: [] as Array<Parameters<ProxyObserver["connectionDenied"]>>,
  };
  const observer: ProxyObserver = {
    handshake: (role, result) => events.handshakes.push({ role, result }),
    connectionOpened: (info) => events.opened.push(info),
    connectionClosed: (info, end) => events.closed.push([info, end]),
    connectionRefused: (pod, direction, reason) => events.refused.push({ pod, direction, reason }),
    connectionDenied: (info, denial) => events.denied.push([info, denial]),
  };
  return { events, observer };
}
