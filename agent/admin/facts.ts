/**
 * Reads the running agent's parts into plain data: the readiness facts and the `/config_dump` document. Reads
 * only; nothing here changes the agent.
 */
import type { CertManager, IdentitySnapshot } from "../identity/cert-manager.js";
import { formatSpiffeId, identityOfPod, type SpiffeId } from "../identity/spiffe.js";
import { findNamespace } from "../kube/cluster-lookup.js";
import { enrolledPods } from "../kube/enrollment-diff.js";
import { isMeshEnrolled, peerAuthenticationMode } from "../kube/mesh-selection.js";
import { type PeerAuthenticationMode, type PodSpec, podKey } from "../kube/pod.js";
import type { NodeAgent } from "../node/node-agent.js";
import type { Redirector } from "../redirect/enroller.js";
import type { ReadinessFacts } from "./readiness.js";

export interface AgentParts {
  nodeName: string;
  trustDomain: string;
  agent: NodeAgent;
  certs: CertManager;
  redirector: Redirector;
  /** True once the pod source delivered its first view and the agent applied it. */
  sourceStarted: () => boolean;
}

export function readinessFacts(parts: AgentParts): ReadinessFacts {
  const enrolled = new Map(parts.redirector.enrolled().map((e) => [podKey(e.pod), e]));
  return {
    sourceStarted: parts.sourceStarted(),
    failedPods: parts.agent.failedPods(),
    pods: enrolledPods(parts.agent.state, parts.nodeName).map((pod) => {
      const key = podKey(pod);
      const id = podIdentity(pod, parts.trustDomain);
      return {
        pod: key,
        redirected: enrolled.get(key)?.listeners.every((l) => l.server.listening) === true,
        certificate: id !== undefined && parts.certs.secureContext(id) !== undefined,
        identity: id ? formatSpiffeId(id) : INVALID,
      };
    }),
  };
}

export interface ConfigDump {
  node: string;
  trustDomain: string;
  workloads: Array<{
    pod: string;
    node: string;
    workload: string;
    serviceAccount: string;
    ips: string[];
    meshed: boolean;
    peerAuthentication: PeerAuthenticationMode;
  }>;
  namespaces: Array<{ name: string; labels: Record<string, string>; peerAuthentication?: PeerAuthenticationMode }>;
  enrolled: Array<{
    pod: string;
    identity: string;
    listeners: Array<{ kind: string; family: number; address: string }>;
  }>;
  identities: IdentitySnapshot[];
  failedPods: string[];
}

export function configDump(parts: AgentParts): ConfigDump {
  const state = parts.agent.state;
  return {
    node: parts.nodeName,
    trustDomain: parts.trustDomain,
    workloads: state.pods.map((p) => {
      const ns = findNamespace(state, p.namespace);
      return {
        pod: podKey(p),
        node: p.nodeName,
        workload: p.workload ?? p.name,
        serviceAccount: p.serviceAccount || "default",
        ips: [...p.ips],
        meshed: isMeshEnrolled(p, ns),
        peerAuthentication: peerAuthenticationMode(p, ns),
      };
    }),
    namespaces: state.namespaces.map((n) => ({ ...n, labels: { ...n.labels } })),
    enrolled: parts.redirector.enrolled().map((e) => ({
      pod: podKey(e.pod),
      identity: formatIdentity(e.pod, parts.trustDomain),
      listeners: e.listeners.map((l) => {
        const a = l.server.address();
        return {
          kind: l.kind,
          family: l.family,
          address: a && typeof a === "object" ? `${a.address}:${a.port}` : "not listening",
        };
      }),
    })),
    identities: parts.certs.snapshot(),
    failedPods: parts.agent.failedPods(),
  };
}

const INVALID = "(invalid)";

/** A pod spec whose identity cannot be formed never gets a certificate; shown as "(invalid)". */
function podIdentity(pod: PodSpec, trustDomain: string): SpiffeId | undefined {
  try {
    return identityOfPod(pod, trustDomain);
  } catch {
    return undefined;
  }
}

function formatIdentity(pod: PodSpec, trustDomain: string): string {
  const id = podIdentity(pod, trustDomain);
  return id ? formatSpiffeId(id) : INVALID;
}
