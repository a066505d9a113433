/**
 * Whether the agent is ready to carry its pods' traffic. Pure: the admin server gathers the facts, this decides.
 * Ready means: the pod source delivered its first view, and every pod of this node that should be meshed has its
 * redirection in place (listeners up) and a certificate valid right now. A pod without one would have its meshed
 * traffic refused, so a rollout must not proceed past this agent.
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
  pods: PodReadinessFacts[];
  /** Pods whose enrollment failed and is being retried. */
  failedPods: string[];
}

export interface Readiness {
  ready: boolean;
  reasons: string[];
}

export function readiness(facts: ReadinessFacts): Readiness {
  const reasons: string[] = [];
  if (!facts.sourceStarted) reasons.push("pod source not started");
  for (const failed of facts.failedPods) reasons.push(`pod ${failed}: enrollment failed (retrying)`);
  const failed = new Set(facts.failedPods);
  for (const p of facts.pods) {
    if (!p.redirected && !failed.has(p.pod)) reasons.push(`pod ${p.pod}: redirection not in place`);
    if (!p.certificate) reasons.push(`pod ${p.pod}: no valid certificate for ${p.identity}`);
  }
  return { ready: reasons.length === 0, reasons };
}
