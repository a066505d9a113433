import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import type { RequestOptions } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import test, { type ExecutionContext } from "ava";
import { KubeApiConfig } from "../../../../agent/kube/api/config.js";
import type { KubeApiError } from "../../../../agent/kube/api/errors.js";
import { kubeconfigYaml } from "../../../kube-api/credentials.js";
import { pod } from "../../../kube-api/objects.js";
import type { KubeApiServer } from "../../../kube-api/server.js";
import { capturingLogger } from "../../../support/log-lines.js";
import { fileUrl, loadedPackage, runProbe } from "../../../support/module-probe.js";
import { apiServer, source, until } from "./support.js";
import { echoServer, get, selfSigned } from "./tls-echo.js";

/**
 * Configuration and auth: kubeconfig (token, token file), in-cluster (token and CA rotation, IPv6), what the library
 * does with token files, and which configurations load it at all. kubeconfig.test.ts has every kubeconfig field.
 */

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "ambit-kubecfg-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A directory laid out as a pod's filesystem: fsRoot/var/run/secrets/kubernetes.io/serviceaccount -> the server's. */
async function podFsRoot(t: ExecutionContext, api: KubeApiServer): Promise<string> {
  const root = await tempDir(t);
  await mkdir(join(root, "var/run/secrets/kubernetes.io"), { recursive: true });
  await symlink(api.serviceAccountDir, join(root, "var/run/secrets/kubernetes.io/serviceaccount"));
  return root;
}

test("kubeconfig with a token: server, CA and bearer token for node:https; describe() names no secret", async (t) => {
  const api = await apiServer(t);
  const config = await KubeApiConfig.fromKubeconfig(await api.writeKubeconfig());
  t.is(config.server, api.url);
  const o = await config.requestOptions();
  t.is(o.server, api.url);
  t.is(o.headers.authorization, `Bearer ${api.token}`);
  t.is(String(o.tls.ca), api.caPem);
  t.regex(config.describe(), new RegExp(`^${api.url} \\(kubeconfig .*, token\\)$`));
  t.false(config.describe().includes(api.token));
});

test("kubeconfig problems are kubeconfig_invalid errors that say what is wrong", async (t) => {
  const dir = await tempDir(t);
  const missing = await t.throwsAsync<KubeApiError>(KubeApiConfig.fromKubeconfig(join(dir, "nope")));
  t.like(missing, { code: "kubeconfig_invalid" });
  t.regex(missing?.message ?? "", /cannot load kubeconfig .*nope: .*ENOENT/);
  const path = join(dir, "config");
  await writeFile(path, kubeconfigYaml({ server: "http://127.0.0.1:8080", caPem: "x", user: { token: "t" } }));
  const http = await t.throwsAsync<KubeApiError>(KubeApiConfig.fromKubeconfig(path));
  t.is(http?.code, "kubeconfig_invalid");
  t.regex(http?.message ?? "", /server http:\/\/127.0.0.1:8080 is not https:\/\//);
  const context = await t.throwsAsync<KubeApiError>(KubeApiConfig.fromKubeconfig(path, { context: "other" }));
  t.is(context?.code, "kubeconfig_invalid");
  t.regex(context?.message ?? "", /has no context "other"/);
  const env = { KUBERNETES_SERVICE_HOST: "", KUBERNETES_SERVICE_PORT: "443" };
  const notPod = await t.throwsAsync<KubeApiError>(KubeApiConfig.inCluster({ env }));
  t.is(notPod?.code, "kubeconfig_invalid");
  t.regex(notPod?.message ?? "", /KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT .* not running in a pod\?/);
});

test("kubeconfig tokenFile: read on every request, so a rotated token is used by the next one", async (t) => {
  const api = await apiServer(t);
  const config = await KubeApiConfig.fromKubeconfig(await api.writeKubeconfig({ tokenFile: true }));
  t.regex(config.describe(), /token file .*serviceaccount\/token/);
  t.is((await config.requestOptions()).headers.authorization, `Bearer ${api.token}`);
  const rotated = await api.rotateToken();
  t.is((await config.requestOptions()).headers.authorization, `Bearer ${rotated}`);
});

test("what the library alone does with token files (why config.ts reads them itself)", async (t) => {
  const api = await apiServer(t);
  // A kubeconfig's `tokenFile` (client-go's key): the library does not know it and sends no token at all.
  const kc = new KubeConfig();
  kc.loadFromFile(await api.writeKubeconfig({ tokenFile: true }));
  const viaKubeconfig: RequestOptions = { headers: {} };
  await kc.applyToHTTPSOptions(viaKubeconfig);
  t.false("Authorization" in (viaKubeconfig.headers as Record<string, string>));
  // In-cluster: FileAuth keeps the token it read for a minute, so right after a rotation it sends the old one.
  const inCluster = new KubeConfig();
  inCluster.loadFromCluster(await podFsRoot(t, api));
  const before: RequestOptions = { headers: {} };
  await inCluster.applyToHTTPSOptions(before);
  const old = api.token;
  await api.rotateToken();
  const after: RequestOptions = { headers: {} };
  await inCluster.applyToHTTPSOptions(after);
  t.is((after.headers as Record<string, string>).Authorization, `Bearer ${old}`, "still the old token");
});

test("401 after a token rotation: logged, retried, and the token file's new token is picked up", async (t) => {
  const api = await apiServer(t);
  api.apply(pod({ name: "a" }));
  const dir = await tempDir(t);
  const tokenFile = join(dir, "token");
  await writeFile(tokenFile, `${api.token}\n`);
  const kubeconfig = join(dir, "config");
  await writeFile(kubeconfig, kubeconfigYaml({ server: api.url, caPem: api.caPem, user: { tokenFile } }));
  const { logger, lines } = capturingLogger("info");
  const { source: s, sink } = await source(t, api, {
    config: await KubeApiConfig.fromKubeconfig(kubeconfig),
    logger,
    unhealthyAfterMs: 100,
  });
  await s.start();
  await api.waitForWatches(1, "pods");
  const fresh = await api.rotateToken(); // the server's own token file changes; ours lags behind, as a slow mount would
  api.dropWatches();
  await until(() => api.unauthorizedCount >= 2, "re-watches refused with the old token");
  const line = lines.find((l) => /401 Unauthorized/.test(String(l.msg)));
  t.like(line, { level: 50, resource: "pods", httpStatus: 401 });
  t.regex(String(line?.msg), /token expired, rotated or revoked/);
  await until(() => !s.health().ok, "health shows it");
  t.regex(s.health().reasons[0] ?? "", /^pods: watch not established for \d+ s: HTTP 401 Unauthorized/);
  api.apply(pod({ name: "b" }));
  await writeFile(tokenFile, fresh);
  await until(() => sink.keys("pods").length === 2, "watching again with the new token");
  await until(() => s.health().ok, "healthy again");
  t.is(api.requestCount("list", "pods"), 1, "a refused re-watch does not relist");
});

test("in-cluster: KUBERNETES_SERVICE_HOST/PORT and the service account's files; a rotated token is used at once", async (t) => {
  const api = await apiServer(t);
  api.apply(pod({ name: "a" }));
  const config = await KubeApiConfig.inCluster({ env: api.inClusterEnv(), fsRoot: await podFsRoot(t, api) });
  t.is(config.server, api.url);
  t.regex(
    config.describe(),
    /in-cluster .*, token file .*\/var\/run\/secrets\/kubernetes.io\/serviceaccount\/token\)$/,
  );
  const { source: s, sink } = await source(t, api, { config });
  await s.start();
  t.deepEqual(sink.keys("pods"), ["default/a"]);
  await api.waitForWatches(1, "pods");
  await api.rotateToken();
  api.dropWatches();
  api.apply(pod({ name: "b" }));
  await until(() => sink.keys("pods").length === 2, "re-watched with the rotated token");
  t.is(api.unauthorizedCount, 0, "the new token was read before the first request after the rotation");
});

test("a token file that cannot be used fails the request clearly (and is retried)", async (t) => {
  const api = await apiServer(t);
  const dir = await tempDir(t);
  const tokenFile = join(dir, "token");
  await writeFile(tokenFile, "");
  const kubeconfig = join(dir, "config");
  await writeFile(kubeconfig, kubeconfigYaml({ server: api.url, caPem: api.caPem, user: { tokenFile } }));
  const config = await KubeApiConfig.fromKubeconfig(kubeconfig);
  const empty = await t.throwsAsync<KubeApiError>(config.requestOptions());
  t.is(empty?.code, "credentials_unreadable");
  t.regex(empty?.message ?? "", /token file .*token holds no usable token/);
  const { source: s, sink } = await source(t, api, { config });
  const started = s.start();
  await until(() => (s.status()[0]?.restarts.error ?? 0) >= 2, "retried");
  await writeFile(tokenFile, api.token);
  await started;
  t.deepEqual(sink.keys("pods"), []);
  t.is(api.unauthorizedCount, 0, "nothing was sent without a token");
});

test("in-cluster: ca.crt and token are read per request, so a rotated CA bundle or token is used at once", async (t) => {
  const echo = await echoServer(t);
  const root = await tempDir(t);
  const dir = join(root, "var/run/secrets/kubernetes.io/serviceaccount");
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "token"), "first-token\n");
  await writeFile(join(dir, "ca.crt"), (await selfSigned()).certPem); // the cluster's CA before a rotation
  const env = { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: String(echo.port) };
  const config = await KubeApiConfig.inCluster({ env, fsRoot: root });
  t.is(config.describe(), `${echo.url} (in-cluster (${dir}), token file ${dir}/token)`);
  await t.throwsAsync(get(config), { message: /self[- ]signed|unable to verify|certificate/i });
  await writeFile(join(dir, "ca.crt"), echo.caPem);
  t.is((await get(config)).authorization, "Bearer first-token");
  await writeFile(join(dir, "token"), "second-token");
  t.is((await get(config)).authorization, "Bearer second-token");
  await rm(join(dir, "ca.crt"));
  const gone = await t.throwsAsync<KubeApiError>(config.requestOptions());
  t.is(gone?.code, "credentials_unreadable");
  t.regex(gone?.message ?? "", /^in-cluster .*: cannot read certificate-authority .*\/ca\.crt: .*ENOENT/);
});

test("in-cluster: an IPv6 KUBERNETES_SERVICE_HOST is bracketed; a port that is not a number is refused", async (t) => {
  const env = { KUBERNETES_SERVICE_HOST: "fd00:10:96::1", KUBERNETES_SERVICE_PORT: "443" };
  const config = await KubeApiConfig.inCluster({ env, fsRoot: "/nonexistent" });
  t.is(config.server, "https://[fd00:10:96::1]:443");
  t.is(new URL(config.server).hostname, "[fd00:10:96::1]");
  const bad = { KUBERNETES_SERVICE_HOST: "10.96.0.1", KUBERNETES_SERVICE_PORT: "https" };
  const err = await t.throwsAsync<KubeApiError>(KubeApiConfig.inCluster({ env: bad }));
  t.is(err?.code, "kubeconfig_invalid");
});

/**
 * Whether a fresh node that builds the configuration and prepares a request has @kubernetes/client-node among its
 * modules, recorded by a resolve hook (module-probe.ts), which sees every ES module import, static or dynamic.
 */
test("in-cluster and a kubeconfig without plugins never load @kubernetes/client-node; an exec user does", async (t) => {
  const echo = await echoServer(t);
  const root = await tempDir(t);
  const sa = join(root, "var/run/secrets/kubernetes.io/serviceaccount");
  await mkdir(sa, { recursive: true });
  await writeFile(join(sa, "token"), "t");
  await writeFile(join(sa, "ca.crt"), echo.caPem);
  const plain = join(root, "plain");
  await writeFile(
    plain,
    kubeconfigYaml({ server: echo.url, caPem: echo.caPem, user: { tokenFile: join(sa, "token") } }),
  );
  const plugin = join(root, "plugin.sh");
  await writeFile(
    plugin,
    `#!/bin/sh\necho '{"apiVersion":"client.authentication.k8s.io/v1","status":{"token":"p"}}'\n`,
  );
  await chmod(plugin, 0o755);
  const exec = join(root, "exec");
  await writeFile(
    exec,
    `clusters: [{name: c, cluster: {server: "${echo.url}"}}]
users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: "${plugin}"}}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`,
  );
  const load = `const { KubeApiConfig } = await import(${JSON.stringify(fileUrl("agent/kube/api/config.js"))});`;
  const probe = async (make: string) => {
    const r = await runProbe(
      `${load} const c = await ${make}; const o = await c.requestOptions(); return o.headers.authorization;`,
      {
        recordModules: true,
      },
    );
    t.true(
      r.modules.some((u) => u.endsWith("/agent/kube/api/config.js")),
      "the probe loaded config.js",
    );
    return { authorization: r.result, library: loadedPackage(r.modules, "@kubernetes/client-node") };
  };
  const env = JSON.stringify({ KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: String(echo.port) });
  t.deepEqual(await probe(`KubeApiConfig.inCluster({ env: ${env}, fsRoot: ${JSON.stringify(root)} })`), {
    authorization: "Bearer t",
    library: false,
  });
  t.deepEqual(await probe(`KubeApiConfig.fromKubeconfig(${JSON.stringify(plain)})`), {
    authorization: "Bearer t",
    library: false,
  });
  t.deepEqual(await probe(`KubeApiConfig.fromKubeconfig(${JSON.stringify(exec)})`), {
    authorization: "Bearer p",
    library: true,
  });
});
