/**
 * The agent's three HTTP ports: metrics (Prometheus scrapes it, so all interfaces by default), admin (loopback:
 * config and connections reveal identities and addresses) and readiness (the kubelet probes it).
 */
import type { Registry } from "prom-client";
import { CheckError, explainCheck } from "../policy/explain.js";
import type { ConnectionTracker } from "./connection-tracker.js";
import { type AgentParts, configDump, readinessFacts } from "./facts.js";
import { json, type Reply, type ServingEndpoint, serveRoutes } from "./http-server.js";
import { readiness } from "./readiness.js";

export interface AgentServersOptions {
  metricsAddress: string;
  adminAddress: string;
  readyAddress: string;
  registry: Registry;
  tracker: ConnectionTracker;
  parts: AgentParts;
}

export interface AgentServers {
  metrics: string;
  admin: string;
  ready: string;
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
  try {
    const metrics = await serveRoutes("metrics", o.metricsAddress, {
      "/metrics": async () => ({
        status: 200,
        body: await o.registry.metrics(),
        contentType: o.registry.contentType,
      }),
    });
    started.push(metrics);
    const admin = await serveRoutes("admin", o.adminAddress, {
      "/config_dump": () => json(200, configDump(o.parts)),
      "/connections": () => json(200, o.tracker.snapshot()),
      "/authorization/check": (query) => checkRoute(o.parts, query),
      "/healthz/ready": ready,
    });
    started.push(admin);
    const readyServer = await serveRoutes("ready", o.readyAddress, { "/healthz/ready": ready });
    started.push(readyServer);
    return {
      metrics: metrics.address,
      admin: admin.address,
      ready: readyServer.address,
      close: async () => {
        await Promise.all(started.map((s) => s.close()));
      },
    };
  } catch (err) {
    await Promise.all(started.map((s) => s.close()));
    throw err;
  }
}
