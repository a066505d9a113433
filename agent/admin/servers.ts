/**
 * The agent's three HTTP ports: metrics (Prometheus scrapes it, so all interfaces by default), admin (loopback:
 * config and connections reveal identities and addresses) and readiness (the kubelet probes it).
 */
import type { Registry } from "prom-client";
import type { Logger } from "../log.js";
import { CheckError, explainCheck } from "../policy/explain.js";
import type { ConnectionTracker } from "./connection-tracker.js";
import { type AgentParts, configDump, readinessFacts } from "./facts.js";
import { json, type Reply, type ServingEndpoint, serveRoutes } from "./http-server.js";
import { ProbeFiles } from "./probe-files.js";
import { readiness } from "./readiness.js";

/** How often a port held by the previous agent is tried again; it is freed when that agent exits. */
const PORT_RETRY_MS = 500;

export interface AgentServersOptions {
  metricsAddress: string;
  adminAddress: string;
  readyAddress: string;
  registry: Registry;
  tracker: ConnectionTracker;
  parts: AgentParts;
  /** Write the probe files (probe-files.ts) in this directory. */
  probeDir?: string;
  /** Ports held by another process are served once free, instead of failing the start (see waitForPort). */
  waitForPorts?: boolean;
  logger: Logger;
}

export interface AgentServers {
  metrics: string;
  admin: string;
  ready: string;
  /** Draining: the probe file says not ready from now on (the HTTP check still tells the truth about pods). */
  notReady(): void;
  close(): Promise<void>;
}

/** `ambit check`: GET /authorization/check?pod=ns/name&from=<spiffe-id|ip>&port=N[&source-ip=IP]. */
function checkRoute(parts: AgentParts, query: URLSearchParams): Reply {
  const sourceIp = query.get("source-ip");
  try {
    const answer = explainCheck(parts.agent.state, parts.rootNamespace, parts.trustDomain, {
      pod: query.get("pod") ?? "",
      from: query.get("from") ?? "",
      port: Number(query.get("port") ?? ""),
      ...(sourceIp !== null ? { sourceIp } : {}),
    });
    return json(200, answer);
  } catch (err) {
    if (!(err instanceof CheckError)) throw err;
    return json(err.code === "check_unknown_pod" ? 404 : 400, { error: err.message, code: err.code });
  }
}

export async function startAgentServers(o: AgentServersOptions): Promise<AgentServers> {
  const ready = (): Reply => {
    const r = readiness(readinessFacts(o.parts));
    return json(r.ready ? 200 : 503, r);
  };
  const started: ServingEndpoint[] = [];
  const serving = o.waitForPorts ? { waitWhileBusy: { logger: o.logger, retryMs: PORT_RETRY_MS } } : {};
  let probes: ProbeFiles | undefined;
  try {
    const metrics = await serveRoutes(
      "metrics",
      o.metricsAddress,
      {
        "/metrics": async () => ({
          status: 200,
          body: await o.registry.metrics(),
          contentType: o.registry.contentType,
        }),
      },
      serving,
    );
    started.push(metrics);
    const admin = await serveRoutes(
      "admin",
      o.adminAddress,
      {
        "/config_dump": () => json(200, configDump(o.parts)),
        "/connections": () => json(200, o.tracker.snapshot()),
        "/authorization/check": (query) => checkRoute(o.parts, query),
        "/healthz/ready": ready,
      },
      serving,
    );
    started.push(admin);
    const readyServer = await serveRoutes("ready", o.readyAddress, { "/healthz/ready": ready }, serving);
    started.push(readyServer);
    if (o.probeDir) probes = new ProbeFiles(o.probeDir, () => readiness(readinessFacts(o.parts)).ready, o.logger);
    return {
      metrics: metrics.address,
      admin: admin.address,
      ready: readyServer.address,
      notReady: () => probes?.notReady(),
      close: async () => {
        probes?.close();
        await Promise.all(started.map((s) => s.close()));
      },
    };
  } catch (err) {
    probes?.close();
    await Promise.all(started.map((s) => s.close()));
    throw err;
  }
}
