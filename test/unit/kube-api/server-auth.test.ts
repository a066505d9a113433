import { readFile } from "node:fs/promises";
import { request } from "node:https";
import { join } from "node:path";
import test from "ava";
import { KubeTokenReviewer, NODE_NAME_EXTRA } from "../../../agent/ca/kube-token-reviewer.js";
import { KubeApiConfig } from "../../../agent/kube/api/config.js";
import { pod } from "../../kube-api/objects.js";
import { KubeApiServer, type KubeApiServerOptions } from "../../kube-api/server.js";
import { call, Watch } from "./client.js";

async function server(t: import("ava").ExecutionContext, options: KubeApiServerOptions = {}) {
  const s = await KubeApiServer.start(options);
  t.teardown(() => s.close());
  return s;
}

const UNAUTHORIZED = {
  kind: "Status",
  apiVersion: "v1",
  metadata: {},
  status: "Failure",
  message: "Unauthorized",
  reason: "Unauthorized",
  code: 401,
};

test("every request needs the bearer token: 401 with an Unauthorized Status otherwise", async (t) => {
  const s = await server(t);
  s.apply(pod({ name: "a" }));
  for (const path of [
    "/api/v1/pods",
    "/api/v1/pods?watch=1",
    "/api/v1/namespaces/default/pods/a",
    "/apis",
    "/version",
  ]) {
    for (const token of [null, "wrong"]) {
      const r = await call(s, path, { token });
      t.is(r.status, 401, `${path} with ${token}`);
      t.deepEqual(r.body, UNAUTHORIZED);
    }
  }
  const review = await call(s, "/apis/authentication.k8s.io/v1/tokenreviews", {
    method: "POST",
    token: null,
    body: { kind: "TokenReview", apiVersion: "authentication.k8s.io/v1", spec: { token: "x" } },
  });
  t.is(review.status, 401);
  t.is(s.unauthorizedCount, 11);
  t.is(s.requestCount("list"), 0, "refused requests are not counted as API calls");
  t.is(s.tokenReviewCount, 0);
});

/** The three values of a kubeconfig our writer produces, read back as a client would. */
function parseKubeconfig(text: string) {
  const field = (name: string) => JSON.parse(new RegExp(`${name}: (".*")`).exec(text)?.[1] ?? '""') as string;
  return {
    server: field("server"),
    ca: Buffer.from(field("certificate-authority-data"), "base64").toString(),
    token: field("token"),
    tokenFile: field("tokenFile"),
  };
}

function getWith(url: string, ca: string, token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, headers: { authorization: `Bearer ${token}` }, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", reject);
    req.end();
  });
}

test("kubeconfig: server, CA data and token (or token file) that a client can use as they are", async (t) => {
  const s = await server(t);
  const text = await readFile(await s.writeKubeconfig(), "utf8");
  t.regex(text, /^apiVersion: v1\nkind: Config\n/);
  t.regex(text, /current-context: "?ambit-test"?/);
  const cfg = parseKubeconfig(text);
  t.is(cfg.server, s.url);
  t.is(cfg.ca, s.caPem);
  t.is(await getWith(`${cfg.server}/api/v1/pods`, cfg.ca, cfg.token), 200);
  const viaFile = parseKubeconfig(
    await readFile(await s.writeKubeconfig({ tokenFile: true, path: join(s.dir, "k2") }), "utf8"),
  );
  t.is(viaFile.tokenFile, s.tokenFile);
  const old = s.token;
  const fresh = await s.rotateToken();
  t.not(fresh, old);
  t.is(await getWith(`${cfg.server}/api/v1/pods`, cfg.ca, old), 401, "a rotated-away token is refused");
  t.is(await getWith(`${cfg.server}/api/v1/pods`, cfg.ca, await readFile(viaFile.tokenFile, "utf8")), 200);
});

test("in-cluster: KUBERNETES_SERVICE_HOST/PORT plus token, ca.crt and namespace files", async (t) => {
  const s = await server(t);
  const env = s.inClusterEnv();
  const dir = s.serviceAccountDir;
  const [token, ca, ns] = await Promise.all(
    ["token", "ca.crt", "namespace"].map((f) => readFile(join(dir, f), "utf8")),
  );
  t.is(ns, "default");
  const url = `https://${env.KUBERNETES_SERVICE_HOST}:${env.KUBERNETES_SERVICE_PORT}/api/v1/namespaces/${ns}/pods`;
  t.is(await getWith(url, ca as string, token as string), 200);
  // The serving certificate also names the in-cluster DNS names (checked with the server name a client sends).
  const status = await new Promise<number>((resolve, reject) => {
    const req = request(
      url,
      { ca, servername: "kubernetes.default.svc", headers: { authorization: `Bearer ${token}` }, agent: false },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on("error", reject);
    req.end();
  });
  t.is(status, 200);
});

test("TokenReview: answers from the table with the real response shape, honours spec.audiences, counts", async (t) => {
  const agent = "system:serviceaccount:ambit-system:ambit";
  const s = await server(t, {
    tokenUsers: {
      "agent-token": {
        user: {
          username: agent,
          uid: "u-1",
          groups: ["system:serviceaccounts"],
          extra: { [NODE_NAME_EXTRA]: ["node-a"] },
        },
        audiences: ["ambit-ca", "https://kubernetes.default.svc.cluster.local"],
      },
    },
  });
  const review = (spec: object) =>
    call(s, "/apis/authentication.k8s.io/v1/tokenreviews", {
      method: "POST",
      body: { apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", spec },
    });
  const ok = await review({ token: "agent-token", audiences: ["ambit-ca"] });
  t.is(ok.status, 201);
  t.deepEqual(ok.body.status, {
    authenticated: true,
    user: { username: agent, uid: "u-1", groups: ["system:serviceaccounts"], extra: { [NODE_NAME_EXTRA]: ["node-a"] } },
    audiences: ["ambit-ca"],
  });
  t.like(ok.body, { kind: "TokenReview", apiVersion: "authentication.k8s.io/v1", spec: { token: "agent-token" } });
  t.like((await review({ token: "agent-token" })).body.status, {
    authenticated: true,
    audiences: ["https://kubernetes.default.svc.cluster.local"],
  });
  const wrong = (await review({ token: "agent-token", audiences: ["elsewhere"] })).body.status;
  t.is(wrong.authenticated, undefined);
  t.truthy(wrong.error);
  t.is((await review({ token: "unknown" })).body.status.authenticated, undefined);
  t.is((await review({})).status, 400);
  t.is(s.tokenReviewCount, 5, "every review request is counted, malformed ones too");

  // ambit's own TokenReview client works against it unchanged.
  const reviewer = new KubeTokenReviewer({
    api: await KubeApiConfig.fromKubeconfig(await s.writeKubeconfig()),
    allowedUsers: [agent],
    audiences: ["ambit-ca"],
  });
  t.deepEqual(await reviewer.review("agent-token"), { nodeName: "node-a", user: agent });
  t.is(await reviewer.review("unknown"), undefined);
  s.setTokenUser("agent-token", undefined);
  t.is(await reviewer.review("agent-token"), undefined, "a token removed from the table no longer authenticates");
  t.is(s.tokenReviewCount, 8);

  // Tokens in the table authenticate API requests too, as service-account tokens do.
  s.setTokenUser("pod-token", { user: { username: "system:serviceaccount:shop:web" } });
  t.is((await call(s, "/api/v1/pods", { token: "pod-token" })).status, 200);
  const w = new Watch(s, "/api/v1/pods?watch=1&timeoutSeconds=1", "pod-token");
  t.is((await w.response).statusCode, 200);
  await w.end();
});
