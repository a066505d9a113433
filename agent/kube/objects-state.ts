import { type ClusterState, emptyClusterState } from "./cluster-state.js";
import { metadataKey, RESOURCES, resourceOfKind, type StoredResource } from "./resources.js";

/** Raw objects of any kinds, sorted into the resources ambit follows (others are dropped). */
export function byResource(raws: readonly unknown[], nodeName?: string): Map<StoredResource, unknown[]> {
  const out = new Map<StoredResource, unknown[]>();
  for (const r of Object.keys(RESOURCES) as StoredResource[]) if (r !== "nodePods" || nodeName) out.set(r, []);
  for (const raw of raws) {
    const o = raw as { apiVersion?: unknown; kind?: unknown; spec?: { nodeName?: unknown } } | null;
    const resource = resourceOfKind(o?.apiVersion, o?.kind);
    if (!resource) continue;
    out.get(resource)?.push(raw);
    if (resource === "pods" && nodeName && o?.spec?.nodeName === nodeName) out.get("nodePods")?.push(raw);
  }
  return out;
}

/**
 * A snapshot straight from objects, for tests and in-process agents: invalid objects are dropped (the sources log
 * them; see cluster-store.ts). With `nodeName`, nodePods holds that node's pods.
 */
export function stateFromObjects(raws: readonly unknown[], nodeName?: string): ClusterState {
  const state: Record<string, unknown> = { ...emptyClusterState() };
  for (const [resource, objects] of byResource(raws, nodeName)) {
    const map = new Map<string, unknown>();
    for (const raw of objects) {
      const key = metadataKey(raw, resource);
      const out = RESOURCES[resource].convert(raw, undefined);
      if (key !== undefined && "record" in out) map.set(key, out.record);
    }
    state[resource] = map;
  }
  return state as unknown as ClusterState;
}
