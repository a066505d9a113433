/**
 * Reads the running agent's parts into plain data: the readiness facts and the `/config_dump` document. Reads
 * only; nothing here changes the agent.
 */
import type { CertManager, IdentitySnapshot } from "../identity/cert-manager.js";
import { formatSpiffeId, identityOfPod, type SpiffeId } from "../identity/spiffe.js";
import { podsOfNode } from "../kube/cluster-state.js";
import { enrolledPods } from "../kube/enrollment-diff.js";
import { isMeshEnrolled } from "../kube/mesh-selection.js";
import { type MtlsDecision, peerAuthenticationResolver } from "../kube/peer-authentication.js";
import { objectKey, type PodRecord } from "../kube/records.js";
import type { SourceHealth } from "../kube/source.js";
import type { EnrollmentSource, NodeAgent } from "../node/node-agent.js";
import { type AppliedPolicies, authorizationResolver, type CompiledPolicy, weighed } from "../policy/authorization.js";
import { policyWarnings } from "../policy/warnings.js";
import type { Redirector } from "../redirect/enroller.js";
import type { ReadinessFacts } from "./readiness.js";

export interface AgentParts {
  nodeName: string;
  trustDomain: string;
  rootNamespace: string;
  agent: NodeAgent;
  certs: CertManager;
  redirector: Redirector;
  /** True once the cluster source delivered its first view and the agent applied it. */
  sourceStarted: () => boolean;
  sourceHealth: () => SourceHealth;
}

export function readinessFacts(parts: AgentParts): ReadinessFacts {
  const enrolled = new Map(parts.redirector.enrolled().map((e) => [objectKey(e.pod), e]));
  return {
    sourceStarted: parts.sourceStarted(),
    sourceProblems: parts.sourceHealth().reasons,
    failedPods: parts.agent.failedPods(),
    pods: enrolledPods(parts.agent.state, parts.nodeName).map((pod) => {
      const key = objectKey(pod);
      const id = podIdentity(pod, parts.trustDomain);
      return {
        pod: key,
        redirected: enrolled.get(key)?.listeners.every((l) => l.served.listening) === true,
        certificate: id !== undefined && parts.certs.secureContext(id) !== undefined,
        identity: id ? formatSpiffeId(id) : INVALID,
      };
    }),
  };
}

export interface ConfigDump {
  node: string;
  trustDomain: string;
  rootNamespace: string;
  source: SourceHealth;
  /** This node's pods (the cluster's other pods are only in the workload index: counted, not listed). */
  pods: Array<{
    pod: string;
    uid: string;
    workload: string;
    serviceAccount: string;
    ips: readonly string[];
    phase: string;
    meshed: boolean;
    /** The PeerAuthentication decision for plaintext to the pod (port 0: no port-level setting). */
    peerAuthentication: MtlsDecision;
    /** The AuthorizationPolicies that select the pod, by action (`namespace/name`). */
    authorization: { custom: string[]; deny: string[]; allow: string[] };
  }>;
  /** The AuthorizationPolicies that select a pod of this node, as ambit enforces them, with what differs. */
  authorizationPolicies: Array<{ policy: string; action: string; rules: number; warnings: string[] }>;
  cluster: {
    pods: number;
    namespaces: number;
    services: number;
    peerAuthentications: number;
    authorizationPolicies: number;
  };
  enrolled: Array<{
    pod: string;
    identity: string;
    /**
     * Where the namespace came from (`cni`: the plugin's ADD; `api`: the pod's record, namespace found in /proc or
     * at its path) and when the rules and listeners went in (ISO 8601). Absent only for a pod the redirector holds
     * that the node agent did not enroll (none in a running agent).
     */
    source?: EnrollmentSource;
    enrolledAt?: string;
    netns: string;
    listeners: Array<{ kind: string; family: number; address: string }>;
  }>;
  identities: IdentitySnapshot[];
  notEnrolled: Array<{ pod: string; reason: string }>;
}

export function configDump(parts: AgentParts): ConfigDump {
  const state = parts.agent.state;
  const policies = peerAuthenticationResolver(state, parts.rootNamespace);
  const authorization = authorizationResolver(state.authorizationPolicies, parts.rootNamespace);
  const pods = podsOfNode(state, parts.nodeName);
  // applied() is memoised per pod record: reading it again per pod below costs a lookup.
  const selecting = new Map(pods.flatMap((p) => weighed(authorization.applied(p))).map((p) => [p.key, p]));
  const keys = (list: readonly CompiledPolicy[]) => list.map((p) => p.key);
  const byAction = (a: AppliedPolicies) => ({ custom: keys(a.custom), deny: keys(a.deny), allow: keys(a.allow) });
  return {
    node: parts.nodeName,
    trustDomain: parts.trustDomain,
    rootNamespace: parts.rootNamespace,
    source: parts.sourceHealth(),
    pods: pods.map((p) => ({
      pod: objectKey(p),
      uid: p.uid,
      workload: p.workload,
      serviceAccount: p.serviceAccount,
      ips: p.ips,
      phase: p.phase,
      meshed: isMeshEnrolled(p, state.namespaces.get(p.namespace)),
      peerAuthentication: policies.explain(p, 0),
      authorization: byAction(authorization.applied(p)),
    })),
    authorizationPolicies: [...selecting.values()].map((p) => ({
      policy: p.key,
      action: p.action,
      rules: p.rules.length,
      warnings: policyWarnings(p),
    })),
    cluster: {
      pods: state.pods.size,
      namespaces: state.namespaces.size,
      services: state.services.size,
      peerAuthentications: state.peerAuthentications.size,
      authorizationPolicies: state.authorizationPolicies.size,
    },
    enrolled: parts.redirector.enrolled().map((e) => ({
      pod: objectKey(e.pod),
      identity: formatIdentity(e.pod, parts.trustDomain),
      ...enrollmentFields(parts.agent, objectKey(e.pod)),
      netns: e.netns.description,
      listeners: e.listeners.map((l) => ({
        kind: l.kind,
        family: l.family,
        address: l.served.address() ?? "not listening",
      })),
    })),
    identities: parts.certs.snapshot(),
    notEnrolled: parts.agent.failedPods(),
  };
}

function enrollmentFields(agent: NodeAgent, key: string): { source?: EnrollmentSource; enrolledAt?: string } {
  const how = agent.enrollmentOf(key);
  return how ? { source: how.source, enrolledAt: how.at.toISOString() } : {};
}

const INVALID = "(invalid)";

/** A pod whose identity cannot be formed never gets a certificate; shown as "(invalid)". */
function podIdentity(pod: PodRecord, trustDomain: string): SpiffeId | undefined {
  try {
    return identityOfPod(pod, trustDomain);
  } catch {
    return undefined;
  }
}

function formatIdentity(pod: PodRecord, trustDomain: string): string {
  const id = podIdentity(pod, trustDomain);
  return id ? formatSpiffeId(id) : INVALID;
}
