import type { PodRecord } from "../../agent/kube/records.js";

/** A pod record with plain defaults (Running, one IP, service account "web"), for unit tests. */
export function podRecord(over: Partial<PodRecord> & { name: string }): PodRecord {
  return {
    uid: `uid-${over.name}`,
    namespace: "shop",
    serviceAccount: "web",
    nodeName: "node-a",
    labels: {},
    ips: ["10.0.0.2"],
    phase: "Running",
    hostNetwork: false,
    terminating: false,
    workload: over.name,
    ...over,
  };
}
