import { readFile } from "node:fs/promises";
import type { RequestOptions } from "node:https";
import { isIPv6 } from "node:net";
import { dirname, resolve } from "node:path";
import type { KubeConfig } from "@kubernetes/client-node";
import { parse as parseYaml } from "yaml";
import { KubeApiError } from "./errors.js";

/**
 * Where the API server is and how to authenticate to it, from `--kubeconfig FILE` or the pod's service account.
 *
 * @kubernetes/client-node does the configuration and auth (kubeconfig parsing, contexts, client certificates, exec
 * and OIDC plugins, in-cluster discovery) and nothing else: requests go out on node:https (list-watch.ts says why).
 * Its applyToHTTPSOptions runs again for every request, so what it reads from files (CA bundle, client
 * certificate) and what plugins refresh is always current.
 *
 * Token files are read here, not by the library, on every request: in 1.4.0 it reads a kubeconfig's `token-file`
 * once at load (and does not know client-go's actual key, `tokenFile`, at all: such a user sends no token), and its
 * in-cluster FileAuth re-reads the service-account token at most once a minute. A projected token is rotated by
 * the kubelet; where the old one stops working at once (as the test server's rotateToken() does), a minute of
 * 401s would follow. The file is a few hundred bytes and requests are rare (a watch lives minutes), so reading it
 * each time costs nothing and a rotated token is used by the very next request.
 */

/** What one request needs besides method and path: the server and node:https TLS/auth options (no agent). */
export interface ApiRequestOptions {
  /** Base URL, without a trailing slash: https://host:port[/prefix]. */
  server: string;
  tls: Pick<RequestOptions, "ca" | "cert" | "key" | "pfx" | "passphrase" | "servername" | "rejectUnauthorized">;
  /** Authorization (bearer token), Impersonate-User, ... */
  headers: Record<string, string>;
  /** user:password (basic auth), when the kubeconfig user has them. */
  auth?: string;
}

/** The part of a configuration a list-watch uses; KubeApiConfig is the real one. */
export interface ApiRequestConfig {
  readonly server: string;
  requestOptions(): Promise<ApiRequestOptions>;
  /** For log lines: where the configuration came from and how it authenticates (never a secret). */
  describe(): string;
}

const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

// Loaded on first use: importing the library costs ~0.8 s of CPU (its generated API client comes with it), which
// an agent following a pod file instead of the API server should not pay.
async function library(): Promise<typeof import("@kubernetes/client-node")> {
  return import("@kubernetes/client-node");
}

/** The current user's token file in a kubeconfig, which the library does not handle (see above); relative to the file. */
function kubeconfigTokenFile(text: string, path: string, context: string): string | undefined {
  type Named<T> = Array<{ name?: unknown } & T>;
  const doc = parseYaml(text) as {
    contexts?: Named<{ context?: { user?: unknown } }>;
    users?: Named<{ user?: Record<string, unknown> }>;
  } | null;
  const userName = doc?.contexts?.find((c) => c?.name === context)?.context?.user;
  const user = doc?.users?.find((u) => u?.name === userName)?.user;
  // kubeconfig semantics: a token given inline wins over a token file.
  if (!user || typeof user.token === "string") return undefined;
  const file = user.tokenFile ?? user["token-file"];
  return typeof file === "string" && file !== "" ? resolve(dirname(path), file) : undefined;
}

export class KubeApiConfig implements ApiRequestConfig {
  readonly server: string;
  readonly #kc: KubeConfig;
  readonly #origin: string;
  readonly #tokenFile: string | undefined;

  private constructor(kc: KubeConfig, origin: string, tokenFile: string | undefined) {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new KubeApiError("kubeconfig_invalid", `${origin}: no current context or cluster`);
    if (!cluster.server.startsWith("https://")) {
      throw new KubeApiError("kubeconfig_invalid", `${origin}: server ${cluster.server} is not https://`);
    }
    if (cluster.proxyUrl) {
      throw new KubeApiError("kubeconfig_invalid", `${origin}: proxy-url is not supported (${cluster.proxyUrl})`);
    }
    this.#kc = kc;
    this.#origin = origin;
    this.#tokenFile = tokenFile;
    this.server = cluster.server.replace(/\/+$/, "");
  }

  /** `--kubeconfig FILE`: its current context, or `context`. */
  static async fromKubeconfig(path: string, options: { context?: string } = {}): Promise<KubeApiConfig> {
    const { KubeConfig } = await library();
    const kc = new KubeConfig();
    let text: string;
    try {
      text = await readFile(path, "utf8");
      kc.loadFromString(text);
      kc.makePathsAbsolute(dirname(path));
    } catch (cause) {
      throw new KubeApiError("kubeconfig_invalid", `cannot load kubeconfig ${path}: ${(cause as Error).message}`, {
        cause,
      });
    }
    if (options.context !== undefined) {
      if (!kc.getContextObject(options.context)) {
        throw new KubeApiError("kubeconfig_invalid", `kubeconfig ${path} has no context "${options.context}"`);
      }
      kc.setCurrentContext(options.context);
    }
    return new KubeApiConfig(kc, `kubeconfig ${path}`, kubeconfigTokenFile(text, path, kc.getCurrentContext()));
  }

  /**
   * In a pod: KUBERNETES_SERVICE_HOST/PORT and the service account's token and CA bundle (the library's
   * loadFromCluster). `fsRoot` is prefixed to /var/run/secrets/kubernetes.io/serviceaccount (tests); `env` is
   * where the two variables are read (process.env by default).
   */
  static async inCluster(
    options: { env?: Record<string, string | undefined>; fsRoot?: string } = {},
  ): Promise<KubeApiConfig> {
    const env = options.env ?? process.env;
    const host = env.KUBERNETES_SERVICE_HOST;
    const port = env.KUBERNETES_SERVICE_PORT;
    if (!host || !port || !/^\d{1,5}$/.test(port)) {
      throw new KubeApiError(
        "kubeconfig_invalid",
        `in-cluster configuration needs KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT (got "${host ?? ""}", ` +
          `"${port ?? ""}"): not running in a pod? Pass --kubeconfig instead`,
      );
    }
    const { KubeConfig } = await library();
    const kc = new KubeConfig();
    const fsRoot = options.fsRoot ?? "";
    kc.loadFromCluster(fsRoot);
    // loadFromCluster reads process.env itself (and writes "https://undefined:undefined" when the variables are
    // unset); the server is set from the checked `env`, so a caller may pass its own.
    const server = `https://${isIPv6(host) ? `[${host}]` : host}:${port}`;
    kc.clusters = kc.clusters.map((c) => ({ ...c, server }));
    const user = kc.getCurrentUser();
    const tokenFile = (user?.authProvider as { config?: { tokenFile?: string } } | undefined)?.config?.tokenFile;
    return new KubeApiConfig(kc, `in-cluster (${fsRoot}${SERVICE_ACCOUNT_DIR})`, tokenFile);
  }

  describe(): string {
    const user = this.#kc.getCurrentUser();
    let auth = "no credentials";
    if (this.#tokenFile) auth = `token file ${this.#tokenFile}`;
    else if (user?.token) auth = "token";
    else if (user?.certFile || user?.certData) auth = "client certificate";
    else if (user?.exec) auth = "exec plugin";
    else if (user?.authProvider) auth = `auth provider ${String(user.authProvider.name)}`;
    else if (user?.username) auth = "basic auth";
    return `${this.server} (${this.#origin}, ${auth})`;
  }

  async requestOptions(): Promise<ApiRequestOptions> {
    const applied: RequestOptions = { headers: {} };
    try {
      await this.#kc.applyToHTTPSOptions(applied);
    } catch (cause) {
      throw new KubeApiError(
        "credentials_unreadable",
        `${this.#origin}: cannot prepare credentials: ${(cause as Error).message}`,
        { cause },
      );
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(applied.headers ?? {})) {
      if (typeof v === "string" || typeof v === "number") headers[k.toLowerCase()] = String(v);
    }
    if (this.#tokenFile) headers.authorization = `Bearer ${await this.#readToken(this.#tokenFile)}`;
    const tls: ApiRequestOptions["tls"] = {};
    for (const k of ["ca", "cert", "key", "pfx", "passphrase", "servername", "rejectUnauthorized"] as const) {
      if (applied[k] !== undefined) (tls as Record<string, unknown>)[k] = applied[k];
    }
    const options: ApiRequestOptions = { server: this.server, tls, headers };
    if (typeof applied.auth === "string") options.auth = applied.auth;
    return options;
  }

  async #readToken(path: string): Promise<string> {
    let token: string;
    try {
      token = (await readFile(path, "utf8")).trim();
    } catch (cause) {
      throw new KubeApiError("credentials_unreadable", `cannot read token file ${path}: ${(cause as Error).message}`, {
        cause,
      });
    }
    // Bearer tokens are printable ASCII without spaces; anything else (an empty file, binary) would make a bad
    // header, which node:https refuses with an exception.
    if (!/^[!-~]+$/.test(token)) {
      throw new KubeApiError("credentials_unreadable", `token file ${path} holds no usable token`);
    }
    return token;
  }
}
