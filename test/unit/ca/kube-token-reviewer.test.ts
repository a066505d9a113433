import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import test from "ava";
import { startCaServer } from "../../../agent/ca/ca-server.js";
import { KubeTokenReviewer } from "../../../agent/ca/kube-token-reviewer.js";
import { RemoteCertificateSource } from "../../../agent/identity/ca-client.js";
import { createCsrPem } from "../../../agent/identity/csr.js";
import { IdentityError } from "../../../agent/identity/errors.js";
import { generateRsaKeyPair } from "../../../agent/identity/keys.js";
import { podRecord } from "../../support/records.js";
import { newCa, sid } from "../identity/helpers.js";
import { AGENT, apiAt, fakeApiServer as startFakeApiServer } from "./fake-api-server.js";

/** The Kubernetes reviewer, pointed at a stand-in API server. */
async function fakeApiServer(t: import("ava").ExecutionContext) {
  const api = await startFakeApiServer(t);
  const reviewer = new KubeTokenReviewer({ api: api.api, allowedUsers: [AGENT] });
  return { ...api, reviewer };
}

test("TokenReview: the agent's token yields its node; the request is a proper TokenReview", async (t) => {
  const { reviewer, seen } = await fakeApiServer(t);
  t.deepEqual(await reviewer.review("agent-token"), { nodeName: "node-a", user: AGENT });
  t.like(seen[0], {
    path: "/apis/authentication.k8s.io/v1/tokenreviews",
    auth: "Bearer ca-own-token",
    body: { apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", spec: { token: "agent-token" } },
  });
});

test("TokenReview: unauthenticated, another service account, or no node claim -> not a node", async (t) => {
  const { reviewer } = await fakeApiServer(t);
  t.is(await reviewer.review("unknown"), undefined);
  t.is(await reviewer.review("pod-token"), undefined, "a workload's token must not act as its node's agent");
  t.is(await reviewer.review("no-node"), undefined);
});

test("TokenReview: audiences are sent and enforced", async (t) => {
  const { api, seen } = await fakeApiServer(t);
  const opts = { api, allowedUsers: [AGENT] };
  const ok = new KubeTokenReviewer({ ...opts, audiences: ["ambit-ca"] });
  t.like(await ok.review("agent-token"), { nodeName: "node-a" });
  t.deepEqual((seen.at(-1)?.body.spec as { audiences?: string[] } | undefined)?.audiences, ["ambit-ca"]);
  t.is(await new KubeTokenReviewer({ ...opts, audiences: ["other"] }).review("agent-token"), undefined);
});

test("TokenReview: API errors and an unreachable API server throw token_review_failed", async (t) => {
  const { reviewer, files, dir } = await fakeApiServer(t);
  const err = await t.throwsAsync(reviewer.review("boom"), { instanceOf: IdentityError });
  t.is((err as IdentityError).code, "token_review_failed");
  const down = new KubeTokenReviewer({ api: await apiAt("https://127.0.0.1:1", dir, files), allowedUsers: [AGENT] });
  t.is(((await t.throwsAsync(down.review("agent-token"))) as IdentityError).code, "token_review_failed");
});

test("the CA server with the Kubernetes reviewer: node from TokenReview, API failure -> 503", async (t) => {
  const { reviewer, dir } = await fakeApiServer(t);
  const ca = await newCa(3600);
  const pod = podRecord({ name: "cart-1", serviceAccount: "cart", nodeName: "node-a" });
  const server = await startCaServer({ ca, reviewer, lookupPod: () => pod, host: "127.0.0.1", port: 0 });
  t.teardown(() => server.close());
  await writeFile(join(dir, "bundle.pem"), ca.trustBundlePem());
  await writeFile(join(dir, "agent-token"), "agent-token");
  const client = new RemoteCertificateSource({
    url: server.url,
    caBundleFile: join(dir, "bundle.pem"),
    tokenFile: join(dir, "agent-token"),
  });
  const csrPem = createCsrPem(await generateRsaKeyPair(), "spiffe://cluster.local/ns/shop/sa/cart");
  const req = { csrPem, identity: sid("shop", "cart"), pod: { namespace: "shop", name: "cart-1" } };
  t.regex((await client.sign(req)).certChainPem, /BEGIN CERTIFICATE/);
  await writeFile(join(dir, "agent-token"), "boom");
  const err = await t.throwsAsync(client.sign(req));
  t.like(err, { status: 503, code: "token_review_failed" });
});
