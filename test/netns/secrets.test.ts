import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { promisify } from "node:util";
import test from "ava";
import pino from "pino";
import { startCaServer } from "../../agent/ca/ca-server.js";
import { FileTokenReviewer } from "../../agent/ca/token-reviewer.js";
import { loadOrCreateCa } from "../../agent/identity/ca-files.js";
import type { SpiffeId } from "../../agent/identity/spiffe.js";
import type { AgentConfig } from "../../agent/node/config.js";
import { startAgent } from "../../agent/node/run-agent.js";
import { waitFor } from "../bench/support.js";
import { secretLeaks } from "../support/secret-leaks.js";
import { clusterFor } from "./support/cluster.js";
import { answerIn, closeServer, request } from "./support/sockets.js";

const meshed = { "ambit.dev/mesh": "enabled" };
const CLI = join(process.cwd(), "dist/agent/cli.js");
const run = promisify(execFile);
const ids: SpiffeId[] = ["sa-a", "sa-b"].map((sa) => ({
  trustDomain: "cluster.local",
  namespace: "default",
  serviceAccount: sa,
}));

/** Every byte a pino logger writes, as written, at debug level. */
function rawLogger(): { logger: pino.Logger; text: () => string } {
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  return { logger: pino({ level: "debug" }, sink), text: () => chunks.join("") };
}

test("no private key in any log line, admin document or `ambit certs` output; key files 0600 in a 0700 directory", async (t) => {
  t.timeout(60_000);
  const cluster = await clusterFor(t, {
    nodes: [
      {
        name: "n1",
        pods: [
          { name: "a", labels: meshed, serviceAccount: "sa-a" },
          { name: "b", labels: meshed, serviceAccount: "sa-b" },
        ],
      },
    ],
  });
  const [a, b] = [cluster.pod("a"), cluster.pod("b")];
  const app = answerIn(b.netnsPath, b.ipv4, 8080, () => "hello from b");
  t.teardown(() => closeServer(app));
  const dir = mkdtempSync(join(tmpdir(), "ambit-secrets-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const manifests = join(dir, "manifests");
  mkdirSync(manifests);
  await cluster.writeManifests(join(manifests, "cluster.json"));
  const files = {
    caDir: join(dir, "ca"),
    tokens: join(dir, "tokens.json"),
    token: join(dir, "token"),
  };
  writeFileSync(files.tokens, JSON.stringify({ "tok-n1": "n1" }));
  // The agent starts with a token the CA does not know: its first CA calls fail (401), logged on both sides.
  writeFileSync(files.token, "not-a-token\n");

  // The CA as `ambit ca --ca-dir` runs it, every line at debug level; 6 s certificates, so they rotate at ~3 s.
  const caLog = rawLogger();
  const ca = await loadOrCreateCa(files.caDir, {
    trustDomain: "cluster.local",
    leafLifetimeSec: 6,
    logger: caLog.logger,
  });
  const state = cluster.clusterState();
  const server = await startCaServer({
    ca,
    reviewer: new FileTokenReviewer(files.tokens),
    lookupPod: (namespace, name) => state.pods.get(`${namespace}/${name}`),
    host: "127.0.0.1",
    port: 0,
    logger: caLog.logger,
  });
  t.teardown(() => server.close());

  const agentLog = rawLogger();
  const config: AgentConfig = {
    nodeName: "n1",
    source: { kind: "manifests", path: manifests },
    rootNamespace: "istio-system",
    trustDomain: "cluster.local",
    caUrl: server.url,
    caBundleFile: join(files.caDir, "ca.crt"),
    caTokenFile: files.token,
    certLifetimeSec: 6,
    hostRules: false,
    metricsAddress: "127.0.0.1:0",
    adminAddress: "127.0.0.1:0",
    readyAddress: "127.0.0.1:0",
    logLevel: "debug",
    workers: 1,
  };
  const agent = await startAgent(config, agentLog.logger);
  t.teardown(async () => {
    for (const e of agent.redirector.enrolled()) agent.redirector.unenroll(`${e.pod.namespace}/${e.pod.name}`);
    await agent.stop();
  });
  await waitFor("a refused CA call", async () => agentLog.text().includes("certificate issuance failed"), 15_000);
  t.regex(caLog.text(), /"status":401/, "the CA refused the unknown token");
  writeFileSync(files.token, "tok-n1\n");

  // Every key the agent presents: its first certificates, then at least one rotation of each.
  const keys = new Set<string>();
  const serials = new Map<string, Set<string>>();
  const collect = () => {
    for (const id of ids) {
      const material = agent.certs.material(id);
      if (!material) continue;
      keys.add(material.keyPem);
      const seen = serials.get(id.serviceAccount) ?? new Set<string>();
      seen.add(material.serial);
      serials.set(id.serviceAccount, seen);
    }
  };
  const rotatedTwice = async () => {
    collect();
    return ids.every((id) => (serials.get(id.serviceAccount)?.size ?? 0) >= 2);
  };
  // The HBONE path uses the key in the data plane's thread too; its lines are in the agent's log.
  await waitFor(
    "a -> b through the mesh",
    async () => (await request(a.netnsPath, b.ipv4, 8080).catch(() => "")) === "hello from b",
    15_000,
  );
  await waitFor("each identity's certificate rotated", rotatedTwice, 20_000);
  t.is(await request(a.netnsPath, b.ipv4, 8080), "hello from b", "and with the rotated certificates");
  // A port nothing listens on: the destination answers the CONNECT 503, and both sides log it at debug level.
  t.is(await request(a.netnsPath, b.ipv4, 9090).catch(() => ""), "");
  collect();
  keys.add(readFileSync(join(files.caDir, "ca.key"), "utf8"));
  t.true(keys.size >= 5, `${keys.size} keys to look for (4 workload keys and the root)`);

  const get = async (address: string, path: string) => {
    const res = await fetch(`http://${address}${path}`);
    t.is(res.status, 200, path);
    return res.text();
  };
  const dump = await get(agent.endpoints.admin, "/config_dump");
  t.regex(dump, /spiffe:\/\/cluster\.local\/ns\/default\/sa\/sa-a/, "the dump lists the identities");
  const certs = await run("node", [CLI, "certs", "--admin", agent.endpoints.admin], { timeout: 20_000 });
  t.regex(certs.stdout, /sa-b state=ready/);
  const outputs: Record<string, string> = {
    "agent log": agentLog.text(),
    "CA log": caLog.text(),
    "/config_dump": dump,
    "/connections": await get(agent.endpoints.admin, "/connections"),
    "/metrics": await get(agent.endpoints.metrics, "/metrics"),
    "ambit certs": certs.stdout + certs.stderr,
  };
  await waitFor("the refused stream's debug lines", async () => agentLog.text().includes('"level":20'), 5000);
  outputs["agent log"] = agentLog.text();
  t.regex(outputs["agent log"] ?? "", /workload certificate installed/);
  for (const [what, text] of Object.entries(outputs)) {
    t.deepEqual(secretLeaks(text, [...keys]), [], what);
    // Bearer tokens are secrets too, the right one and the mistyped one alike.
    t.false(text.includes("tok-n1") || text.includes("not-a-token"), `${what}: a bearer token`);
  }

  const mode = (path: string) => statSync(path).mode & 0o777;
  t.is(mode(files.caDir).toString(8), "700", "the CA directory");
  t.is(mode(join(files.caDir, "ca.key")).toString(8), "600", "the root key");
  t.is(mode(join(files.caDir, "ca.crt")).toString(8), "644", "the root certificate");
  t.deepEqual(readdirSync(files.caDir).sort(), ["ca.crt", "ca.key"], "no temporary key left behind");
});
