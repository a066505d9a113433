import type { CertManager } from "../../../agent/identity/cert-manager.js";
import type { Logger } from "../../../agent/log.js";
import type { MeshDataPath } from "../../../agent/node/data-path.js";
import type { ProxyObserver } from "../../../agent/proxy/observer.js";
import { MeshProxy } from "../../../agent/proxy/proxy.js";
import type { HboneTuning } from "../../../agent/proxy/tuning.js";

/**
 * Which proxy the netns tests run against: AMBIT_TEST_DATAPLANE=workers runs them on the data plane's worker
 * threads (two workers, so connections of one test land on both), anything else on the Node-sockets proxy.
 */
export const TEST_DATAPLANE: "workers" | "node" = process.env.AMBIT_TEST_DATAPLANE === "workers" ? "workers" : "node";
export const TEST_WORKERS = 2;

/** The agent configuration's data-path fields for a test agent. */
export const testDataplaneConfig = { dataplane: TEST_DATAPLANE, workers: TEST_WORKERS } as const;

export async function testDataPath(options: {
  trustDomain: string;
  certs: CertManager;
  observer: ProxyObserver;
  logger: Logger;
  tuning?: Partial<HboneTuning>;
  workers?: number;
}): Promise<MeshDataPath> {
  const { workers = TEST_WORKERS, ...common } = options;
  if (TEST_DATAPLANE === "node") return new MeshProxy(common);
  const { MeshDataplane } = await import("../../../agent/dataplane/mesh-dataplane.js");
  return new MeshDataplane({ ...common, workers });
}

/** Each worker throttles its own log lines: a line logged "once per interval" shows at most this many times. */
export const LOGGERS_PER_NODE = TEST_DATAPLANE === "workers" ? TEST_WORKERS : 1;
