import { X509Certificate } from "node:crypto";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import test, { type ExecutionContext } from "ava";
import { stringify } from "yaml";
import { KubeApiConfig } from "../../../../agent/kube/api/config.js";
import type { KubeApiError } from "../../../../agent/kube/api/errors.js";
import { type EchoServer, echoServer, get, selfSigned, tempDir } from "./tls-echo.js";

/**
 * `--kubeconfig FILE` without @kubernetes/client-node: every field KubeApiConfig interprets, from real files in a
 * temp dir, checked by real TLS requests to a stand-in server that echoes what it received.
 */

type Fields = Record<string, unknown>;

const b64 = (s: string) => Buffer.from(s).toString("base64");
const sha256 = (pem: string) => new X509Certificate(pem).fingerprint256;

/** A kubeconfig of one cluster, one user and one current context, written as YAML to dir/name. */
async function writeKubeconfig(dir: string, cluster: Fields, user?: Fields, name = "config"): Promise<string> {
  const path = join(dir, name);
  const doc = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "c", cluster }],
    users: user ? [{ name: "u", user }] : [],
    contexts: [{ name: "x", context: user ? { cluster: "c", user: "u" } : { cluster: "c" } }],
    "current-context": "x",
  };
  await writeFile(path, stringify(doc));
  return path;
}

async function setup(t: ExecutionContext): Promise<{ dir: string; echo: EchoServer }> {
  return { dir: await tempDir(t), echo: await echoServer(t) };
}

test("certificate-authority: a file relative to the kubeconfig, read per request, so a rotated bundle is used at once", async (t) => {
  const { dir, echo } = await setup(t);
  await mkdir(join(dir, "conf/pki"), { recursive: true });
  const caFile = join(dir, "conf/pki/ca.pem");
  await writeFile(caFile, (await selfSigned()).certPem); // not the CA that issued the server's certificate
  const path = await writeKubeconfig(
    join(dir, "conf"),
    { server: echo.url, "certificate-authority": "pki/ca.pem" },
    { token: "tok" },
  );
  const config = await KubeApiConfig.fromKubeconfig(path);
  const refused = await t.throwsAsync(get(config));
  t.regex(refused?.message ?? "", /self[- ]signed|unable to verify|certificate/i);
  await writeFile(caFile, echo.caPem);
  t.is((await get(config)).authorization, "Bearer tok");
  t.is(String((await config.requestOptions()).tls.ca), echo.caPem);
  await writeFile(caFile, (await selfSigned()).certPem);
  await t.throwsAsync(get(config), { message: /self[- ]signed|unable to verify|certificate/i }, "and back");
});

test("certificate-authority-data: base64 in the kubeconfig; a missing CA file is credentials_unreadable per request", async (t) => {
  const { dir, echo } = await setup(t);
  const path = await writeKubeconfig(dir, { server: echo.url, "certificate-authority-data": b64(echo.caPem) }, {});
  const config = await KubeApiConfig.fromKubeconfig(path);
  t.like(await get(config), { servername: false });
  t.regex(config.describe(), new RegExp(`^${echo.url} \\(kubeconfig .*config, context x, no credentials\\)$`));
  const missing = await writeKubeconfig(dir, { server: echo.url, "certificate-authority": "nope.pem" }, {}, "m");
  const broken = await KubeApiConfig.fromKubeconfig(missing);
  const err = await t.throwsAsync<KubeApiError>(broken.requestOptions());
  t.is(err?.code, "credentials_unreadable");
  t.regex(err?.message ?? "", /context x: cannot read certificate-authority .*\/nope\.pem: .*ENOENT/);
});

test("insecure-skip-tls-verify: true skips verification (and describe() says so); without it an unknown server is refused", async (t) => {
  const { dir, echo } = await setup(t);
  const verified = await KubeApiConfig.fromKubeconfig(await writeKubeconfig(dir, { server: echo.url }, {}, "v"));
  t.is((await verified.requestOptions()).tls.rejectUnauthorized, undefined);
  await t.throwsAsync(get(verified), { message: /self[- ]signed|unable to verify|certificate/i });
  const skip = await writeKubeconfig(dir, { server: echo.url, "insecure-skip-tls-verify": true }, { token: "t" });
  const config = await KubeApiConfig.fromKubeconfig(skip);
  t.is((await get(config)).authorization, "Bearer t");
  t.regex(config.describe(), /token, insecure-skip-tls-verify: server certificate NOT verified\)$/);
  // YAML 1.1, as client-go reads kubeconfigs: `yes` is true.
  await writeFile(
    join(dir, "yes"),
    `clusters: [{name: c, cluster: {server: "${echo.url}", insecure-skip-tls-verify: yes}}]
contexts: [{name: x, context: {cluster: c}}]
current-context: x
`,
  );
  t.is((await KubeApiConfig.fromKubeconfig(join(dir, "yes"))).describe().includes("NOT verified"), true);
});

test("tls-server-name: sent as SNI and the name the server certificate is checked against", async (t) => {
  const { dir, echo } = await setup(t);
  const ca = { server: echo.url, "certificate-authority-data": b64(echo.caPem) };
  const right = await writeKubeconfig(dir, { ...ca, "tls-server-name": "kubernetes.default.svc" }, {}, "r");
  t.like(await get(await KubeApiConfig.fromKubeconfig(right)), { servername: "kubernetes.default.svc" });
  const wrong = await writeKubeconfig(dir, { ...ca, "tls-server-name": "api.elsewhere.test" }, {}, "w");
  await t.throwsAsync(get(await KubeApiConfig.fromKubeconfig(wrong)), { message: /api\.elsewhere\.test/ });
});

test("client-certificate and client-key: files relative to the kubeconfig, read per request (a renewed pair is used at once)", async (t) => {
  const { dir, echo } = await setup(t);
  const first = await selfSigned();
  await writeFile(join(dir, "client.crt"), first.certPem);
  await writeFile(join(dir, "client.key"), first.keyPem);
  const cluster = { server: echo.url, "certificate-authority-data": b64(echo.caPem) };
  const path = await writeKubeconfig(dir, cluster, { "client-certificate": "client.crt", "client-key": "client.key" });
  const config = await KubeApiConfig.fromKubeconfig(path);
  t.regex(config.describe(), /, client certificate\)$/);
  t.is((await get(config)).clientCertSha256, sha256(first.certPem));
  const renewed = await selfSigned();
  await writeFile(join(dir, "client.key"), renewed.keyPem);
  await writeFile(join(dir, "client.crt"), renewed.certPem);
  t.is((await get(config)).clientCertSha256, sha256(renewed.certPem));
});

test("client-certificate-data and client-key-data: base64 in the kubeconfig", async (t) => {
  const { dir, echo } = await setup(t);
  const pair = await selfSigned();
  const path = await writeKubeconfig(
    dir,
    { server: echo.url, "certificate-authority-data": b64(echo.caPem) },
    { "client-certificate-data": b64(pair.certPem), "client-key-data": b64(pair.keyPem), token: "tok" },
  );
  const config = await KubeApiConfig.fromKubeconfig(path);
  t.like(await get(config), { clientCertSha256: sha256(pair.certPem), authorization: "Bearer tok" });
  t.regex(config.describe(), /, token, client certificate\)$/);
  t.false(config.describe().includes("tok)"));
});

test("username and password: basic auth; describe() names the user, never the password", async (t) => {
  const { dir, echo } = await setup(t);
  const path = await writeKubeconfig(
    dir,
    { server: echo.url, "certificate-authority-data": b64(echo.caPem) },
    { username: "admin", password: "s3cret:x" },
  );
  const config = await KubeApiConfig.fromKubeconfig(path);
  t.is((await get(config)).authorization, `Basic ${b64("admin:s3cret:x")}`);
  t.regex(config.describe(), /, basic auth as admin\)$/);
  t.false(config.describe().includes("s3cret"));
});

test("token-file and tokenFile: relative to the kubeconfig, read per request; an inline token wins; `as` impersonates", async (t) => {
  const { dir, echo } = await setup(t);
  const cluster = { server: echo.url, "certificate-authority-data": b64(echo.caPem) };
  await writeFile(join(dir, "token"), "first\n");
  for (const key of ["token-file", "tokenFile"]) {
    const config = await KubeApiConfig.fromKubeconfig(await writeKubeconfig(dir, cluster, { [key]: "token" }, key));
    t.regex(config.describe(), new RegExp(`, token file ${dir}/token\\)$`));
    await writeFile(join(dir, "token"), "first\n");
    t.is((await get(config)).authorization, "Bearer first");
    await writeFile(join(dir, "token"), "rotated");
    t.is((await get(config)).authorization, "Bearer rotated", key);
  }
  const both = await writeKubeconfig(dir, cluster, { token: "inline", tokenFile: "token", as: "jane" }, "both");
  const config = await KubeApiConfig.fromKubeconfig(both);
  t.deepEqual(await get(config), { authorization: "Bearer inline", impersonateUser: "jane", servername: false });
  t.regex(config.describe(), /, token, impersonating jane\)$/);
});

test("contexts: current-context, or the one asked for; paths and the server come from that context's entries", async (t) => {
  const { dir, echo } = await setup(t);
  const path = join(dir, "config");
  await writeFile(
    path,
    stringify({
      clusters: [
        { name: "unused", cluster: { server: "http://not-https.example:8080" } },
        { name: "echo", cluster: { server: `${echo.url}/prefix/`, "certificate-authority-data": b64(echo.caPem) } },
      ],
      users: [
        { name: "a", user: { token: "token-a" } },
        { name: "b", user: { token: "token-b" } },
      ],
      contexts: [
        { name: "ca", context: { cluster: "echo", user: "a", namespace: "x" } },
        { name: "cb", context: { cluster: "echo", user: "b" } },
        { name: "cb", context: { cluster: "unused", user: "a" } },
      ],
      "current-context": "ca",
    }),
  );
  const current = await KubeApiConfig.fromKubeconfig(path);
  t.is(current.server, `${echo.url}/prefix`);
  t.is((await get(current, "/x")).authorization, "Bearer token-a");
  const named = await KubeApiConfig.fromKubeconfig(path, { context: "cb" });
  t.is((await get(named)).authorization, "Bearer token-b", "the first context of a name");
  t.regex(named.describe(), /context cb, token\)$/);
});

/** What fromKubeconfig says about a kubeconfig with `text`. */
async function refusal(t: ExecutionContext, dir: string, text: string, context?: string): Promise<string> {
  const path = join(dir, `k${Math.random().toString(36).slice(2)}`);
  await writeFile(path, text);
  const err = await t.throwsAsync<KubeApiError>(KubeApiConfig.fromKubeconfig(path, context ? { context } : {}));
  t.is(err?.code, "kubeconfig_invalid", text);
  return err?.message ?? "";
}

test("wrong types, missing entries and unsupported settings are kubeconfig_invalid errors naming the field", async (t) => {
  const dir = await tempDir(t);
  const ctx = "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n";
  const ok = 'clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]\n';
  const cases: Array<[string, RegExp]> = [
    ["", /: the document must be a mapping, not null|: empty/],
    ["- a\n- b\n", /the document must be a mapping, not a list/],
    ["clusters: {a: 1}\n", /clusters must be a list, not a mapping/],
    ["clusters: [{cluster: {server: x}}]\n", /clusters\[0\]\.name is missing/],
    [
      "clusters: [{name: c, cluster: {server: 6443}}]\n",
      /clusters\[0\] \("c"\)\.cluster\.server must be a string, not a number/,
    ],
    ["clusters: [{name: c, cluster: {}}]\n", /clusters\[0\] \("c"\)\.cluster\.server is missing/],
    [
      'clusters: [{name: c, cluster: {server: "https://h", insecure-skip-tls-verify: "maybe"}}]\n',
      /cluster\.insecure-skip-tls-verify must be true or false, not a string/,
    ],
    [
      'clusters: [{name: c, cluster: {server: "https://h", certificate-authority-data: "not base64!"}}]\n',
      /clusters\[0\] \("c"\)\.cluster\.certificate-authority-data is not base64/,
    ],
    [
      `${ok}users: [{name: u, user: {token: 12345}}]\n${ctx}`,
      /users\[0\] \("u"\)\.user\.token must be a string, not a number/,
    ],
    [
      `${ok}users: [{name: u, user: {token: "a b"}}]\n${ctx}`,
      /users\[0\] \("u"\)\.user\.token is not a usable bearer token/,
    ],
    [`${ok}users: [{name: u, user: {client-key: [k]}}]\n${ctx}`, /user\.client-key must be a string, not a list/],
    [
      `${ok}users: [{name: u, user: {exec: "kubelogin"}}]\n${ctx}`,
      /users\[0\] \("u"\)\.user\.exec must be a mapping, not a string/,
    ],
    [
      `${ok}users: [{name: u, user: {client-certificate: c.pem}}]\n${ctx}`,
      /user "u" has a client certificate without a key/,
    ],
    [
      `${ok}users: [{name: u, user: {client-key-data: a2V5}}]\n${ctx}`,
      /user "u" has a client key without a certificate/,
    ],
    [`${ok}users: [{name: u, user: {}}]\n`, /no current-context, and no context was given/],
    [`${ok}users: [{name: v, user: {}}]\n${ctx}`, /context "x" names user "u", which is not in users/],
    [`users: [{name: u, user: {}}]\n${ctx}`, /context "x" names cluster "c", which is not in clusters/],
    [`${ok}contexts: [{name: x, context: {user: u}}]\n`, /contexts\[0\] \("x"\)\.context\.cluster is missing/],
    [
      `clusters: [{name: c, cluster: {server: "https://h", proxy-url: "http://proxy:3128"}}]\n${ctx.replace(", user: u", "")}`,
      /proxy-url is not supported \(http:\/\/proxy:3128\)/,
    ],
    [
      `clusters: [{name: c, cluster: {server: "https://h?x=1"}}]\n${ctx.replace(", user: u", "")}`,
      /server https:\/\/h\?x=1 must be https:\/\/host\[:port\]\[\/path\]/,
    ],
    ["clusters: [\n", /not YAML/],
    ["a: &a [1]\nb: *a\nb: 2\n", /not YAML: .*(unique|duplicate)/i],
  ];
  for (const [text, message] of cases) t.regex(await refusal(t, dir, text), message, text);
  t.regex(await refusal(t, dir, `${ok}users: [{name: u, user: {}}]\n${ctx}`, "y"), /has no context "y"/);
});

test("a kubeconfig over 1 MiB is refused before it is parsed; so is a credential file over 1 MiB", async (t) => {
  const { dir, echo } = await setup(t);
  const path = await writeKubeconfig(dir, { server: echo.url, "certificate-authority": "big.pem" }, {});
  await writeFile(
    path,
    `${await (await import("node:fs/promises")).readFile(path, "utf8")}# ${"x".repeat(1024 * 1024)}\n`,
  );
  const big = await t.throwsAsync<KubeApiError>(KubeApiConfig.fromKubeconfig(path));
  t.is(big?.code, "kubeconfig_invalid");
  t.regex(big?.message ?? "", /cannot load kubeconfig .*: larger than 1048576 bytes/);
  const small = await writeKubeconfig(dir, { server: echo.url, "certificate-authority": "big.pem" }, {}, "small");
  await writeFile(join(dir, "big.pem"), Buffer.alloc(1024 * 1024 + 1, 65));
  const err = await t.throwsAsync<KubeApiError>((await KubeApiConfig.fromKubeconfig(small)).requestOptions());
  t.is(err?.code, "credentials_unreadable");
  t.regex(err?.message ?? "", /cannot read certificate-authority .*big\.pem: larger than 1048576 bytes/);
});

test("a user with an exec plugin falls back to @kubernetes/client-node, which runs the plugin", async (t) => {
  const { dir, echo } = await setup(t);
  const plugin = join(dir, "credential-plugin.sh");
  const credential = {
    apiVersion: "client.authentication.k8s.io/v1",
    kind: "ExecCredential",
    status: { token: "from-plugin" },
  };
  await writeFile(plugin, `#!/bin/sh\necho '${JSON.stringify(credential)}'\n`);
  await chmod(plugin, 0o755);
  const path = await writeKubeconfig(
    dir,
    { server: echo.url, "certificate-authority-data": b64(echo.caPem) },
    { exec: { apiVersion: "client.authentication.k8s.io/v1", command: plugin, interactiveMode: "Never" }, as: "jane" },
  );
  const config = await KubeApiConfig.fromKubeconfig(path);
  t.deepEqual(await get(config), { authorization: "Bearer from-plugin", impersonateUser: "jane", servername: false });
  t.regex(
    config.describe(),
    new RegExp(`, exec plugin ${plugin} \\(via @kubernetes/client-node\\), impersonating jane\\)$`),
  );
  await writeFile(plugin, "#!/bin/sh\necho 'plugin broke' >&2\nexit 1\n");
  const userPath = await writeKubeconfig(
    dir,
    { server: echo.url },
    { exec: { apiVersion: "client.authentication.k8s.io/v1", command: plugin } },
    "other",
  );
  const failing = await t.throwsAsync<KubeApiError>((await KubeApiConfig.fromKubeconfig(userPath)).requestOptions());
  t.is(failing?.code, "credentials_unreadable");
  t.regex(failing?.message ?? "", /cannot prepare credentials: plugin broke/);
});

test("a user with an auth-provider falls back to @kubernetes/client-node as well", async (t) => {
  const { dir, echo } = await setup(t);
  await writeFile(join(dir, "provider-token"), "from-provider");
  // The library's own provider for a token file (its in-cluster user is one), the simplest it has.
  const path = await writeKubeconfig(
    dir,
    { server: echo.url, "certificate-authority-data": b64(echo.caPem) },
    { "auth-provider": { name: "tokenFile", config: { tokenFile: join(dir, "provider-token") } } },
  );
  const config = await KubeApiConfig.fromKubeconfig(path);
  t.is((await get(config)).authorization, "Bearer from-provider");
  t.regex(config.describe(), /, auth provider tokenFile \(via @kubernetes\/client-node\)\)$/);
});
