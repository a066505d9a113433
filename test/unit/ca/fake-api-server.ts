import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { NODE_NAME_EXTRA } from "../../../agent/ca/kube-token-reviewer.js";
import { generateRsaKeyPair } from "../../../agent/identity/keys.js";
import { KubeApiConfig } from "../../../agent/kube/api/config.js";
import { newCa } from "../identity/helpers.js";

export const AGENT = "system:serviceaccount:ambit-system:ambit";

/** What the stand-in API server saw, and switches for how it answers. */
export interface ApiServerState {
  seen: Array<{ path?: string; auth?: string; body: Record<string, unknown> }>;
  /** Answer every review with HTTP 500 (API server trouble). */
  down: boolean;
  /** Hold each answer this long (to see how many reviews run at once). */
  delayMs: number;
  inFlight: number;
  maxInFlight: number;
}

/**
 * A stand-in Kubernetes API server speaking just TokenReview, on loopback HTTPS with a certificate from a test CA.
 * Tokens: agent-token (the agent, on node-a; agent-b, agent-c: on node-b, node-c), pod-token (a workload on
 * node-a), no-node (the agent without a node claim), boom (HTTP 500); anything else is not authenticated.
 */
export async function fakeApiServer(t: import("ava").ExecutionContext) {
  const ca = await newCa(3600);
  const keys = await generateRsaKeyPair();
  const serving = ca.issueServingCertificate(keys, { dnsNames: ["localhost"], ips: ["127.0.0.1"] });
  const state: ApiServerState = { seen: [], down: false, delayMs: 0, inFlight: 0, maxInFlight: 0 };
  const users: Record<string, object> = {
    "agent-token": { username: AGENT, extra: { [NODE_NAME_EXTRA]: ["node-a"] } },
    "agent-b": { username: AGENT, extra: { [NODE_NAME_EXTRA]: ["node-b"] } },
    "agent-c": { username: AGENT, extra: { [NODE_NAME_EXTRA]: ["node-c"] } },
    "pod-token": { username: "system:serviceaccount:shop:cart", extra: { [NODE_NAME_EXTRA]: ["node-a"] } },
    "no-node": { username: AGENT },
  };
  const server = createServer({ key: keys.privateKeyPem, cert: serving.certChainPem }, (req, res) => {
    state.inFlight += 1;
    state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
    let text = "";
    req.on("data", (d) => {
      text += d;
    });
    req.on("end", async () => {
      const body = JSON.parse(text) as { spec: { token: string; audiences?: string[] } };
      state.seen.push({ path: req.url, auth: req.headers.authorization, body });
      if (state.delayMs) await sleep(state.delayMs);
      state.inFlight -= 1;
      if (req.headers.authorization !== "Bearer ca-own-token" || body.spec.token === "boom" || state.down) {
        res.writeHead(500, { "content-type": "application/json" }).end('{"kind":"Status","code":500}');
        return;
      }
      const user = users[body.spec.token];
      const status = user ? { authenticated: true, user, audiences: ["ambit-ca"] } : { authenticated: false };
      res.writeHead(201, { "content-type": "application/json" }).end(JSON.stringify({ ...body, status }));
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const dir = await mkdtemp(join(tmpdir(), "ambit-kube-"));
  const files = { ca: join(dir, "ca.crt"), token: join(dir, "token") };
  await writeFile(files.ca, ca.trustBundlePem());
  await writeFile(files.token, "ca-own-token\n");
  t.teardown(async () => {
    server.closeAllConnections();
    server.close();
    await rm(dir, { recursive: true, force: true });
  });
  const apiServer = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
  return { state, seen: state.seen, apiServer, files, dir, api: await apiAt(apiServer, dir, files) };
}

/**
 * The CA's configuration for an API server at `server` (a kubeconfig with the CA bundle and a token file), through
 * the same loader `ambit ca --kubeconfig` uses.
 */
export async function apiAt(server: string, dir: string, files: { ca: string; token: string }): Promise<KubeApiConfig> {
  const path = join(dir, `kubeconfig-${server.replace(/\W/g, "")}`);
  await writeFile(
    path,
    [
      "apiVersion: v1",
      "kind: Config",
      "clusters: [{name: c, cluster: {server: " +
        JSON.stringify(server) +
        ", certificate-authority: " +
        JSON.stringify(files.ca) +
        "}}]",
      `users: [{name: u, user: {tokenFile: ${JSON.stringify(files.token)}}}]`,
      "contexts: [{name: x, context: {cluster: c, user: u}}]",
      "current-context: x",
      "",
    ].join("\n"),
  );
  return KubeApiConfig.fromKubeconfig(path);
}
