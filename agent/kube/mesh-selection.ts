import { MESH_LABEL, type NamespaceSpec, type PeerAuthenticationMode, type PodSpec } from "./pod.js";

/**
 * Which pods are in the mesh, and how strictly they accept plaintext. Pure: no I/O.
 *
 * Enrollment: `ambit.dev/mesh=disabled` on the pod always opts out (a pod can leave a meshed namespace);
 * `ambit.dev/mesh=enabled` on the pod or on its namespace opts in; anything else (absent, other values, a
 * namespace set to disabled) means not enrolled.
 */
export function isMeshEnrolled(
  pod: Pick<PodSpec, "labels">,
  namespace?: Pick<NamespaceSpec, "labels"> | undefined,
): boolean {
  const own = pod.labels?.[MESH_LABEL];
  if (own === "disabled") return false;
  if (own === "enabled") return true;
  return namespace?.labels?.[MESH_LABEL] === "enabled";
}

export const DEFAULT_PEER_AUTHENTICATION: PeerAuthenticationMode = "PERMISSIVE";

/** The pod's own PeerAuthentication mode, else its namespace's, else PERMISSIVE. */
export function peerAuthenticationMode(
  pod: Pick<PodSpec, "peerAuthentication">,
  namespace?: Pick<NamespaceSpec, "peerAuthentication"> | undefined,
): PeerAuthenticationMode {
  return pod.peerAuthentication ?? namespace?.peerAuthentication ?? DEFAULT_PEER_AUTHENTICATION;
}
