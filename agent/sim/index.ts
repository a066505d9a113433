export { cleanupAllSync, cleanupStale } from "./cleanup.js";
export { type CreateSimClusterOptions, createSimCluster, SimCluster } from "./cluster.js";
export { SimCommandError, SimCreateError, SimSpecError, SimUsageError } from "./errors.js";
export { endpointsOf, type NamespaceSpec, NETNS_ANNOTATION, SIM_POD_LABEL } from "./manifests.js";
export type { RunResult } from "./run.js";
export {
  planSimCluster,
  type SimClusterSpec,
  type SimNode,
  type SimNodeSpec,
  type SimPlan,
  type SimPod,
  type SimPodSpec,
  type SimService,
  type SimServiceSpec,
} from "./topology.js";
export { writeFileAtomic } from "./write-atomic.js";
