export { cleanupAllSync, cleanupStale } from "./cleanup.js";
export { type CreateSimClusterOptions, createSimCluster, SimCluster } from "./cluster.js";
export { SimCommandError, SimCreateError, SimSpecError, SimUsageError } from "./errors.js";
export type { RunResult } from "./run.js";
export {
  planSimCluster,
  type SimClusterSpec,
  type SimNode,
  type SimNodeSpec,
  type SimPlan,
  type SimPod,
  type SimPodSpec,
} from "./topology.js";
