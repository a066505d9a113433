import type { PodRef } from "../identity/certificate-source.js";
import { formatSpiffeId, identityOfPod, type SpiffeId, sameSpiffeId } from "../identity/spiffe.js";
import type { PodRecord } from "../kube/records.js";

export type SignDecision =
  | { ok: true }
  | { ok: false; reason: "pod_not_found" | "other_node" | "identity_mismatch"; message: string };

/**
 * A node may only obtain the identities of pods scheduled on it: the named pod must exist, run on the caller's
 * node, and have exactly the requested identity. Pure; the CA server supplies the pod it looked up.
 */
export function authorizeSign(input: {
  callerNode: string;
  podRef: PodRef;
  pod: PodRecord | undefined;
  identity: SpiffeId;
}): SignDecision {
  const { callerNode, podRef, pod, identity } = input;
  const name = `${podRef.namespace}/${podRef.name}`;
  if (!pod) return { ok: false, reason: "pod_not_found", message: `pod ${name} is not known to the CA` };
  if (pod.nodeName !== callerNode) {
    return { ok: false, reason: "other_node", message: `pod ${name} is not scheduled on node ${callerNode}` };
  }
  const expected = identityOfPod(pod, identity.trustDomain);
  if (!sameSpiffeId(expected, identity)) {
    return {
      ok: false,
      reason: "identity_mismatch",
      message: `pod ${name} runs as ${formatSpiffeId(expected)}, not ${formatSpiffeId(identity)}`,
    };
  }
  return { ok: true };
}
