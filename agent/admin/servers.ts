/**
 * The agent's three HTTP ports: metrics (Prometheus scrapes it, so all interfaces by default), admin (loopback:
 * config and connections reveal identities and addresses) and readiness (the kubelet probes it).
 */
import type { Registry } from "prom-client";
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
