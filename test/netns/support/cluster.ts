import type { ExecutionContext } from "ava";
import { createSimCluster, type SimCluster } from "../../../agent/sim/index.js";
import type { SimClusterSpec } from "../../../agent/sim/topology.js";

/** A simulated cluster destroyed when the test ends, pass or fail. */
export async function clusterFor(t: ExecutionContext, spec: SimClusterSpec): Promise<SimCluster> {
  const cluster = await createSimCluster(spec);
  t.teardown(() => cluster.destroy());
  return cluster;
}
