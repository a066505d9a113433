import { once } from "node:events";
import { readFileSync } from "node:fs";
import type net from "node:net";
import { fileURLToPath } from "node:url";
import test, { type ExecutionContext } from "ava";
import { MeshCa } from "../../agent/identity/ca.js";
import type { ClusterState } from "../../agent/kube/cluster-state.js";
import { parseManifests } from "../../agent/kube/manifest-source.js";
import { withPod } from "../support/cluster-state.js";
import { within } from "../support/within.js";
import { clusterFor } from "./support/cluster.js";
import { nodeFor, recorder } from "./support/components.js";
import { answerIn, closeServer, dialFrom, request, serveIn } from "./support/sockets.js";

/**
 * AuthorizationPolicy enforced by the destination's agent, with real namespaces, agents and mTLS: frontend and batch
 * (meshed) and legacy (not meshed) on n1 call api (app: api) on n2.
 */
const meshed = { "ambit.dev/mesh": "enabled" };
const TD = "cluster.local";
const SEED = fileURLToPath(new URL("../../../deploy/examples/authorization-policy-seed.yaml", import.meta.url));
/** The seed file's documents: [0] the policy as written (methods: GET), [1] its L4 form (ports). */
const seed = parseManifests(readFileSync(SEED, "utf8"));

function policy(name: string, spec: Record<string, unknown>, namespace = "production") {
  return { apiVersion: "security.istio.io/v1", kind: "AuthorizationPolicy", metadata: { name, namespace }, spec };
}

async function setup(t: ExecutionContext, policies: unknown[]) {
  const ns = "production";
  const cluster = await clusterFor(t, {
    nodes: [
      {
        name: "n1",
        pods: [
          { name: "frontend", namespace: ns, labels: meshed, serviceAccount: "frontend" },
          { name: "batch", namespace: ns, labels: meshed, serviceAccount: "batch" },
          { name: "legacy", namespace: ns },
        ],
      },
      { name: "n2", pods: [{ name: "api", namespace: ns, labels: { ...meshed, app: "api" }, serviceAccount: "api" }] },
    ],
  });
  const ca = new MeshCa(await MeshCa.generateRoot(TD), { trustDomain: TD });
  const stateWith = (extra: unknown[]): ClusterState => cluster.clusterState([], extra);
  const api = cluster.pod("api", ns);
  let accepted = 0;
  const app = answerIn(api.netnsPath, api.ipv4, 8080, () => {
    accepted++;
    return "hello from api";
  });
  // A second app on 9090 that keeps each connection open and echoes: for connections a policy change must cut.
  const echo = serveIn(api.netnsPath, api.ipv4, 9090, (sock) => {
    sock.on("error", () => {});
    sock.pipe(sock);
  });
  t.teardown(() => closeServer(app));
  t.teardown(() => closeServer(echo));
  const server = recorder();
  await nodeFor(t, { nodeName: "n1", ca, state: stateWith(policies) });
  let applied = stateWith(policies);
  const n2 = await nodeFor(t, { nodeName: "n2", ca, state: applied, observer: server.observer });
  /** Applies a new set of policies on n2 (the enforcing agent) and waits until its workers have it. */
  const enforce = async (next: unknown[] | ((s: ClusterState) => ClusterState)) => {
    // A function changes the state last applied (the same policy objects): only what it changes changes.
    applied = typeof next === "function" ? next(applied) : stateWith(next);
    n2.agent.apply(applied);
    await n2.agent.settled();
    await n2.proxy.reported();
  };
  /** A connection from `name` to the echo app, open and proven to carry bytes. */
  const openFrom = async (name: string): Promise<net.Socket> => {
    const sock = await dialFrom(cluster.pod(name, ns).netnsPath, api.ipv4, 9090);
    t.teardown(() => sock.destroy());
    sock.on("error", () => {});
    sock.write("ping");
    const [echoed] = await once(sock, "data");
    t.is(String(echoed), "ping");
    return sock;
  };
  const from = (name: string) => request(cluster.pod(name, ns).netnsPath, api.ipv4, 8080, "hi");
  return {
    from,
    openFrom,
    enforce,
    ip: (name: string) => cluster.pod(name, ns).ipv4,
    accepted: () => accepted,
    denied: server.events.denied,
    reported: () => n2.proxy.reported(),
  };
}

test("the seed's policy in its L4 form: frontend reaches app: api; batch (401) and plaintext (reset) never do", async (t) => {
  const mesh = await setup(t, [seed[1]]);
  t.is(await mesh.from("frontend"), "hello from api");
  await t.throwsAsync(mesh.from("batch"), { code: "ECONNRESET" });
  await t.throwsAsync(mesh.from("legacy"), { code: "ECONNRESET" });
  t.is(mesh.accepted(), 1, "the app saw only the frontend's connection");
  await mesh.reported();
  t.deepEqual(
    // Each worker reports in its own batches: sorted, not in the order they happened.
    mesh.denied.map(([info, denial]) => [info.source.principal, info.tls, denial.policy]).sort(),
    [
      ["", false, "allow_unmatched"],
      [`spiffe://${TD}/ns/production/sa/batch`, true, "allow_unmatched"],
    ],
  );
});

test("the seed's policy as written (methods: GET) matches nothing at L4: every caller is denied, as in ztunnel", async (t) => {
  const mesh = await setup(t, [seed[0]]);
  for (const caller of ["frontend", "batch", "legacy"]) {
    await t.throwsAsync(mesh.from(caller), { code: "ECONNRESET" }, caller);
  }
  t.is(mesh.accepted(), 0);
});

test("DENY beats ALLOW, ipBlocks see the caller's pod IP, and a policy removed lets the next connection through", async (t) => {
  const mesh = await setup(t, []);
  t.is(await mesh.from("batch"), "hello from api", "no policy: allowed");
  const allowAll = policy("allow-all", { selector: { matchLabels: { app: "api" } }, rules: [{}] });
  const denyBatch = policy("deny-batch", {
    action: "DENY",
    rules: [{ from: [{ source: { principals: ["*/sa/batch"] } }] }],
  });
  await mesh.enforce([allowAll, denyBatch]);
  await t.throwsAsync(mesh.from("batch"), { code: "ECONNRESET" });
  t.is(await mesh.from("frontend"), "hello from api");
  await mesh.reported();
  t.like(mesh.denied.at(-1)?.[1], { policy: "production/deny-batch", reason: "deny_matched", rule: 0 });

  // Mesh-wide (root namespace) DENY by the legacy pod's IP: plaintext from it is reset, meshed callers pass.
  const denyLegacyIp = policy(
    "deny-legacy-ip",
    { action: "DENY", rules: [{ from: [{ source: { ipBlocks: [`${mesh.ip("legacy")}/32`] } }] }] },
    "istio-system",
  );
  await mesh.enforce([denyLegacyIp]);
  await t.throwsAsync(mesh.from("legacy"), { code: "ECONNRESET" });
  t.is(await mesh.from("batch"), "hello from api");
  await mesh.reported();
  t.like(mesh.denied.at(-1)?.[1], { policy: "istio-system/deny-legacy-ip", reason: "deny_matched" });

  await mesh.enforce([]);
  t.is(await mesh.from("legacy"), "hello from api", "policies removed: allowed again");
});

test("a policy change resets the open connections it no longer allows, HBONE and plaintext, and keeps the others", async (t) => {
  const mesh = await setup(t, []);
  const batch = await mesh.openFrom("batch");
  const frontend = await mesh.openFrom("frontend");
  const legacy = await mesh.openFrom("legacy");
  const closed = (s: net.Socket) =>
    new Promise<number>((resolve) => {
      const started = Date.now();
      if (s.destroyed) resolve(0);
      else s.once("close", () => resolve(Date.now() - started));
    });
  const batchClosed = closed(batch);
  const legacyClosed = closed(legacy);
  const changed = Date.now();
  await mesh.enforce([
    policy("deny-batch", { action: "DENY", rules: [{ from: [{ source: { principals: ["*/sa/batch"] } }] }] }),
    policy(
      "deny-legacy",
      { action: "DENY", rules: [{ from: [{ source: { ipBlocks: [`${mesh.ip("legacy")}/32`] } }] }] },
      "istio-system",
    ),
  ]);
  await within(Promise.all([batchClosed, legacyClosed]), 5000, "the revoked connections to close");
  t.true(Date.now() - changed < 1000, `both were cut within a second of the change (${Date.now() - changed} ms)`);
  // The frontend's connection is still allowed and still carries bytes.
  frontend.write("still here");
  const [echoed] = await once(frontend, "data");
  t.is(String(echoed), "still here");

  // A DENY for pods labelled quarantine=true: nothing changes until the api pod gets the label, then the
  // frontend's connection is cut too.
  const quarantine = policy("quarantine", {
    action: "DENY",
    selector: { matchLabels: { quarantine: "true" } },
    rules: [{}],
  });
  await mesh.enforce([quarantine]);
  frontend.write("unlabelled");
  const [again] = await once(frontend, "data");
  t.is(String(again), "unlabelled");
  const frontendClosed = closed(frontend);
  await mesh.enforce((s) =>
    withPod(s, "production/api", (p) => ({ ...p, labels: { ...p.labels, quarantine: "true" } })),
  );
  await within(frontendClosed, 5000, "the connection to the newly labelled pod to close");
});
