import type { ExecutionContext } from "ava";
import { NetnsRegistry } from "../../../agent/netns/netns-registry.js";
import type { EnrollTarget } from "../../../agent/redirect/enroller.js";
import { createSimCluster, type SimCluster } from "../../../agent/sim/index.js";
import type { SimClusterSpec } from "../../../agent/sim/topology.js";

/** A simulated cluster destroyed when the test ends, pass or fail. */
export async function clusterFor(t: ExecutionContext, spec: SimClusterSpec): Promise<SimCluster> {
  const cluster = await createSimCluster(spec);
  t.teardown(() => cluster.destroy());
  return cluster;
}

/**
 * A pod of `cluster` as the redirector takes it: its record (from the sim's manifests) and its namespace, held
 * through a registry released when the test ends.
 */
export function enrollTarget(
  t: ExecutionContext,
  cluster: SimCluster,
  name: string,
  namespace = "default",
): EnrollTarget {
  const pod = cluster.clusterState().pods.get(`${namespace}/${name}`);
  if (!pod) throw new Error(`no pod ${namespace}/${name}`);
  const registry = new NetnsRegistry();
  t.teardown(() => registry.releaseAll());
  const found = registry.resolve({
    key: `${namespace}/${name}`,
    uid: pod.uid,
    ips: pod.ips,
    ...(pod.netns ? { netns: pod.netns } : {}),
  });
  if (!found.ok) throw found.error;
  return { pod, netns: found.netns };
}
