import type { NamespaceRecord, PodRecord } from "./records.js";

export const MESH_LABEL = "ambit.dev/mesh";

/**
 * Which pods are in the mesh. Pure: no I/O.
 *
 * `ambit.dev/mesh=disabled` on the pod always opts out (a pod can leave a meshed namespace);
 * `ambit.dev/mesh=enabled` on the pod or on its namespace opts in; anything else (absent, other values, a
 * namespace set to disabled) means not enrolled.
 */
export function isMeshEnrolled(
  pod: Pick<PodRecord, "labels">,
  namespace?: Pick<NamespaceRecord, "labels"> | undefined,
): boolean {
  const own = pod.labels[MESH_LABEL];
  if (own === "disabled") return false;
  if (own === "enabled") return true;
  return namespace?.labels[MESH_LABEL] === "enabled";
}
