/**
 * Whether the agent is ready to carry its pods' traffic. Pure: the admin server gathers the facts, this decides.
 * Ready means: the cluster source delivered its first view and is current, and every pod of this node that should
 * be meshed has its redirection in place (listeners up) and a certificate valid right now. A pod without one would
 * have its meshed traffic refused, so a rollout must not proceed past this agent.
 */

export interface PodReadinessFacts {
  pod: string;
  /** Listeners and rules installed (the redirector holds it and every listener is listening). */
  redirected: boolean;
  /** `certs.secureContext(identity)` is defined. */
  certificate: boolean;
  identity: string;
}

export interface ReadinessFacts {
  sourceStarted: boolean;
  /** Why the cluster source's view may be stale (API server unreachable, unusable manifests); empty when current. */
  sourceProblems: string[];
  pods: PodReadinessFacts[];
  /** Pods that should be enrolled and are not, with why (retried). */
  failedPods: Array<{ pod: string; reason: string }>;
}

export interface Readiness {
  ready: boolean;
  reasons: string[];
}

export function readiness(facts: ReadinessFacts): Readiness {
  const reasons: string[] = [];
  if (!facts.sourceStarted) reasons.push("cluster source not started");
  for (const problem of facts.sourceProblems) reasons.push(`cluster source: ${problem} (serving the last known state)`);
  for (const f of facts.failedPods) reasons.push(`pod ${f.pod}: not enrolled: ${f.reason} (retrying)`);
  const failed = new Set(facts.failedPods.map((f) => f.pod));
  for (const p of facts.pods) {
    if (!p.redirected && !failed.has(p.pod)) reasons.push(`pod ${p.pod}: redirection not in place`);
    if (!p.certificate) reasons.push(`pod ${p.pod}: no valid certificate for ${p.identity}`);
  }
  return { ready: reasons.length === 0, reasons };
}
