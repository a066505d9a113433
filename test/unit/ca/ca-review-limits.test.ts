import { writeFile } from "node:fs/promises";
import { Agent, request } from "node:https";
import { join } from "node:path";
import { Writable } from "node:stream";
import test from "ava";
import pino from "pino";
import { startCaServer } from "../../../agent/ca/ca-server.js";
import { KubeTokenReviewer } from "../../../agent/ca/kube-token-reviewer.js";
import type { RateLimitOptions } from "../../../agent/ca/rate-limit.js";
import { CachingTokenReviewer, type ReviewCacheOptions } from "../../../agent/ca/review-cache.js";
import { RemoteCertificateSource } from "../../../agent/identity/ca-client.js";
import { CertManager } from "../../../agent/identity/cert-manager.js";
import { createCsrPem } from "../../../agent/identity/csr.js";
import { CaRequestError } from "../../../agent/identity/errors.js";
import { generateRsaKeyPair } from "../../../agent/identity/keys.js";
import { podRecord } from "../../support/records.js";
import { newCa, sid } from "../identity/helpers.js";
import { AGENT, fakeApiServer } from "./fake-api-server.js";

const CART = "spiffe://cluster.local/ns/shop/sa/cart";
const pod = podRecord({ name: "cart-1", serviceAccount: "cart", nodeName: "node-a" });

/** The CA as `ambit ca` runs it in a cluster: a cached, bounded Kubernetes reviewer against the stand-in API server. */
async function setup(
  t: import("ava").ExecutionContext,
  opts: { rateLimit?: RateLimitOptions; cache?: ReviewCacheOptions } = {},
) {
  const api = await fakeApiServer(t);
  const ca = await newCa(3600);
  const kube = new KubeTokenReviewer({ api: api.api, allowedUsers: [AGENT] });
  const lines: Array<{ level: number; code?: string }> = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      lines.push(JSON.parse(String(chunk)));
      cb();
    },
  });
  const server = await startCaServer({
    ca,
    logger: pino({ level: "info" }, sink),
    reviewer: new CachingTokenReviewer(kube, opts.cache),
    rateLimit: opts.rateLimit,
    lookupPod: () => pod,
    host: "127.0.0.1",
    port: 0,
  });
  t.teardown(() => server.close());
  const agents: Agent[] = [];
  t.teardown(() => {
    for (const a of agents) a.destroy();
  });
  /** A client from one loopback address (127.0.0.0/8 is all local), a few keep-alive connections at most. */
  const from = (localAddress: string) => {
    const agent = new Agent({ keepAlive: true, maxSockets: 16, localAddress, ca: ca.trustBundlePem() });
    agents.push(agent);
    return agent;
  };
  const signBody = JSON.stringify({
    csr: createCsrPem(await generateRsaKeyPair(), CART),
    identity: { namespace: "shop", serviceAccount: "cart" },
    pod: { namespace: "shop", name: "cart-1" },
  });
  return { api, ca, server, from, signBody, lines };
}

interface Answer {
  status: number;
  retryAfter: string | undefined;
  code: string | undefined;
}

function sign(url: string, agent: Agent, token: string, body = "{}"): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}/v1/sign`,
      { method: "POST", agent, headers: { authorization: `Bearer ${token}` } },
      (res) => {
        let text = "";
        res.on("data", (d) => {
          text += d;
        });
        res.on("end", () => {
          const retryAfter = res.headers["retry-after"];
          resolve({ status: res.statusCode ?? 0, retryAfter, code: (JSON.parse(text) as { code?: string }).code });
        });
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

const count = (answers: Answer[], status: number) => answers.filter((a) => a.status === status).length;

test("a flood of unknown tokens from one address costs at most its burst in TokenReviews; the agent keeps signing", async (t) => {
  const burst = 20;
  // A rate this low earns no token during the test, so the bound is exactly the burst.
  const { api, server, from, signBody, lines } = await setup(t, { rateLimit: { burst, ratePerSec: 0.001 } });
  const flooder = from("127.0.0.2");
  t.is((await sign(server.url, flooder, "agent-token", signBody)).status, 200, "the agent's token, now cached");
  const before = api.seen.length;
  const flood = Array.from({ length: 500 }, (_, i) => sign(server.url, flooder, `forged-${i}`));
  // The agent shares the flooding address (its own connections, so it is not queued behind the flood): its cached
  // token is never charged, so the flood does not stop it.
  const agent = from("127.0.0.2");
  const during = Array.from({ length: 5 }, () => sign(server.url, agent, "agent-token", signBody));
  const answers = await Promise.all(flood);
  t.deepEqual(
    (await Promise.all(during)).map((a) => a.status),
    [200, 200, 200, 200, 200],
  );
  const reviews = api.seen.length - before;
  t.true(reviews <= burst, `${reviews} TokenReviews for 500 forged tokens`);
  t.is(count(answers, 401), reviews, "each review answered 401");
  t.is(count(answers, 429), 500 - reviews);
  t.true(
    answers.filter((a) => a.status === 429).every((a) => a.code === "rate_limited" && Number(a.retryAfter) >= 1),
    "429 carries rate_limited and Retry-After",
  );
  t.like(await sign(server.url, from("127.0.0.3"), "forged-x"), { status: 401 }, "another address has its own bucket");
  const warned = lines.filter((l) => l.code === "rate_limited" && l.level >= 40);
  t.is(warned.length, 1, "the flood is logged once, not 480 times");
});

test("200 requests with the same unknown token cost one TokenReview", async (t) => {
  const { api, server, from } = await setup(t, { rateLimit: { burst: 5, ratePerSec: 0.001 } });
  const agent = from("127.0.0.4");
  const answers = await Promise.all(Array.from({ length: 200 }, () => sign(server.url, agent, "forged")));
  t.is(count(answers, 401), 200, "never charged beyond the first, so never 429");
  t.is(api.seen.length, 1);
});

test("TokenReviews running at once never exceed the bound", async (t) => {
  const { api, server, from } = await setup(t, { cache: { maxConcurrent: 3 } });
  api.state.delayMs = 50;
  const addresses = ["127.0.0.5", "127.0.0.6", "127.0.0.7"].map(from);
  const answers = await Promise.all(
    Array.from({ length: 60 }, (_, i) => sign(server.url, addresses[i % 3] as Agent, `forged-${i}`)),
  );
  t.is(count(answers, 401), 60);
  t.is(api.seen.length, 60);
  t.true(api.state.maxInFlight <= 3, `${api.state.maxInFlight} reviews at once`);
  t.true(api.state.maxInFlight > 1, "reviews did run concurrently");
});

test("an API server error is not cached: 503 token_review_failed, then the same token works", async (t) => {
  const { api, server, from, signBody } = await setup(t);
  const agent = from("127.0.0.8");
  api.state.down = true;
  t.like(await sign(server.url, agent, "agent-token", signBody), { status: 503, code: "token_review_failed" });
  api.state.down = false;
  t.like(await sign(server.url, agent, "agent-token", signBody), { status: 200 });
  t.is(api.seen.length, 2);
});

test("the agent reads 429 as rate_limited and waits at least Retry-After (up to its backoff ceiling)", async (t) => {
  const { server, ca, from, api } = await setup(t, { rateLimit: { burst: 2, ratePerSec: 0.001 } });
  // The RemoteCertificateSource connects from 127.0.0.1: spend that address's burst first.
  const local = from("127.0.0.1");
  t.like(await sign(server.url, local, "forged-1"), { status: 401 });
  t.like(await sign(server.url, local, "forged-2"), { status: 401 });
  const dir = api.dir;
  await writeFile(join(dir, "bundle.pem"), ca.trustBundlePem());
  await writeFile(join(dir, "agent-token"), "agent-token");
  const client = new RemoteCertificateSource({
    url: server.url,
    caBundleFile: join(dir, "bundle.pem"),
    tokenFile: join(dir, "agent-token"),
  });
  const req = { csrPem: createCsrPem(await generateRsaKeyPair(), CART), identity: sid("shop", "cart"), pod };
  const err = await t.throwsAsync(client.sign(req), { instanceOf: CaRequestError });
  t.like(err, { status: 429, code: "rate_limited" });
  // One token per 1000 s, a little of it earned since the burst was spent.
  const asked = err?.retryAfterMs ?? 0;
  t.true(asked > 900_000 && asked <= 1_000_000, `Retry-After ${asked} ms`);

  const mgr = new CertManager({ source: client, retry: { initialMs: 100, maxMs: 3000 }, jitter: 0 });
  t.teardown(() => mgr.close());
  const failed = new Promise<{ retryInMs: number; error: Error }>((resolve) => mgr.once("failed", resolve));
  await t.throwsAsync(mgr.acquire(sid("shop", "cart"), { namespace: "shop", name: "cart-1" }));
  t.like(await failed, { retryInMs: 3000, error: { code: "rate_limited" } }, "Retry-After, capped at 3 s");
});
