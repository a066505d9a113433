import type { RequestOptions } from "node:https";
import { isIPv6 } from "node:net";
import { MAX_CREDENTIAL_FILE_BYTES, readLimited } from "./config-files.js";
import { KubeApiError } from "./errors.js";
import {
  type KubeconfigCluster,
  type KubeconfigUser,
  MAX_KUBECONFIG_BYTES,
  parseKubeconfig,
  type TlsMaterial,
} from "./kubeconfig.js";

/**
 * Where the API server is and how to authenticate to it, from `--kubeconfig FILE` or the pod's service account.
 * Requests go out on node:https (list-watch.ts says why); this only says what each one carries.
 *
 * In-cluster and kubeconfig users with a token, token file, client certificate or basic auth are handled here
 * (kubeconfig.ts parses the file). Only a user with an `exec` plugin or an `auth-provider` loads
 * @kubernetes/client-node (library-credentials.ts): a node that loads this configuration and prepares a request
 * holds 50 MiB without it and 108-118 MiB with it (bare node 41 MiB) and uses 0.2 s of CPU instead of 1.2 s
 * (`make bench BENCH=kube-config`); the idle agent of issue 12 (100 pods, target under 100 MB) went from 142-146
 * MiB to 78 MiB.
 *
 * Every file the configuration names (token, CA bundle, client certificate and key) is read again for every
 * request, as the library's applyToHTTPSOptions did, so a rotated one is used by the very next request: a
 * projected service-account token is rotated by the kubelet and, where the old one stops working at once (as the
 * test server's rotateToken() does), a cached one means 401s; the service-account CA bundle changes when the
 * cluster's CA is rotated. The files are a few KB and requests are rare (a watch lives minutes), so reading them
 * each time costs nothing. (The library itself read a kubeconfig's `token-file` once at load, did not know
 * client-go's actual key, `tokenFile`, at all, and re-read the in-cluster token at most once a minute.)
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

type Prepare = () => Promise<Omit<ApiRequestOptions, "server">>;

const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

async function readMaterial(m: TlsMaterial, what: string): Promise<Buffer> {
  if ("data" in m) return m.data;
  try {
    return await readLimited(m.file, MAX_CREDENTIAL_FILE_BYTES);
  } catch (cause) {
    throw new KubeApiError("credentials_unreadable", `cannot read ${what} ${m.file}: ${(cause as Error).message}`, {
      cause,
    });
  }
}

/** The options a cluster and user without plugins give, with every file read now. */
function direct(cluster: KubeconfigCluster, user: KubeconfigUser): Prepare {
  return async () => {
    const tls: ApiRequestOptions["tls"] = {};
    if (cluster.ca) tls.ca = await readMaterial(cluster.ca, "certificate-authority");
    if (user.cert) tls.cert = await readMaterial(user.cert, "client-certificate");
    if (user.key) tls.key = await readMaterial(user.key, "client-key");
    if (cluster.tlsServerName !== undefined) tls.servername = cluster.tlsServerName;
    if (cluster.insecureSkipTlsVerify) tls.rejectUnauthorized = false;
    const headers: Record<string, string> = {};
    if (user.token !== undefined) headers.authorization = `Bearer ${user.token}`;
    if (user.impersonate !== undefined) headers["impersonate-user"] = user.impersonate;
    const options: Omit<ApiRequestOptions, "server"> = { tls, headers };
    if (user.username !== undefined) options.auth = `${user.username}:${user.password ?? ""}`;
    return options;
  };
}

/** How a user authenticates, for describe(): kinds and file paths, never a secret. */
function describeAuth(cluster: KubeconfigCluster, user: KubeconfigUser, tokenFile: string | undefined): string {
  const parts: string[] = [];
  if (user.plugin?.kind === "exec") parts.push(`exec plugin ${user.plugin.command} (via @kubernetes/client-node)`);
  if (user.plugin?.kind === "auth-provider") {
    parts.push(`auth provider ${user.plugin.name} (via @kubernetes/client-node)`);
  }
  if (tokenFile) parts.push(`token file ${tokenFile}`);
  else if (user.token !== undefined) parts.push("token");
  if (user.cert) parts.push("client certificate");
  if (user.username !== undefined) parts.push(`basic auth as ${user.username}`);
  if (parts.length === 0) parts.push("no credentials");
  if (user.impersonate !== undefined) parts.push(`impersonating ${user.impersonate}`);
  if (cluster.insecureSkipTlsVerify) parts.push("insecure-skip-tls-verify: server certificate NOT verified");
  return parts.join(", ");
}

export class KubeApiConfig implements ApiRequestConfig {
  readonly server: string;
  readonly #origin: string;
  readonly #auth: string;
  readonly #prepare: Prepare;
  /** Read for every request; overrides what #prepare put in Authorization. */
  readonly #tokenFile: string | undefined;

  private constructor(cluster: KubeconfigCluster, user: KubeconfigUser, origin: string, prepare: Prepare) {
    this.server = cluster.server;
    this.#origin = origin;
    // kubeconfig semantics: a token given inline wins over a token file.
    this.#tokenFile = user.token === undefined ? user.tokenFile : undefined;
    this.#auth = describeAuth(cluster, user, this.#tokenFile);
    this.#prepare = prepare;
  }

  /** `--kubeconfig FILE`: its current context, or `context`. */
  static async fromKubeconfig(path: string, options: { context?: string } = {}): Promise<KubeApiConfig> {
    let text: string;
    try {
      text = (await readLimited(path, MAX_KUBECONFIG_BYTES)).toString("utf8");
    } catch (cause) {
      throw new KubeApiError("kubeconfig_invalid", `cannot load kubeconfig ${path}: ${(cause as Error).message}`, {
        cause,
      });
    }
    const { context, cluster, user } = parseKubeconfig(text, path, options);
    const origin = `kubeconfig ${path}, context ${context}`;
    if (!user.plugin) return new KubeApiConfig(cluster, user, origin, direct(cluster, user));
    const { libraryCredentials } = await import("./library-credentials.js");
    return new KubeApiConfig(cluster, user, origin, libraryCredentials(text, path, context));
  }

  /**
   * In a pod: KUBERNETES_SERVICE_HOST/PORT and the service account's token and CA bundle, as client-go's
   * InClusterConfig. `fsRoot` is prefixed to /var/run/secrets/kubernetes.io/serviceaccount (tests); `env` is
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
    const dir = `${options.fsRoot ?? ""}${SERVICE_ACCOUNT_DIR}`;
    const cluster: KubeconfigCluster = {
      server: `https://${isIPv6(host) ? `[${host}]` : host}:${port}`,
      ca: { file: `${dir}/ca.crt` },
      insecureSkipTlsVerify: false,
    };
    const user: KubeconfigUser = { tokenFile: `${dir}/token` };
    return new KubeApiConfig(cluster, user, `in-cluster (${dir})`, direct(cluster, user));
  }

  describe(): string {
    return `${this.server} (${this.#origin}, ${this.#auth})`;
  }

  async requestOptions(): Promise<ApiRequestOptions> {
    let prepared: Omit<ApiRequestOptions, "server">;
    try {
      prepared = await this.#prepare();
    } catch (cause) {
      if (cause instanceof KubeApiError)
        throw new KubeApiError(cause.code, `${this.#origin}: ${cause.message}`, { cause });
      throw new KubeApiError(
        "credentials_unreadable",
        `${this.#origin}: cannot prepare credentials: ${(cause as Error).message}`,
        { cause },
      );
    }
    if (this.#tokenFile) prepared.headers.authorization = `Bearer ${await this.#readToken(this.#tokenFile)}`;
    return { server: this.server, ...prepared };
  }

  async #readToken(path: string): Promise<string> {
    let token: string;
    try {
      token = (await readLimited(path, MAX_CREDENTIAL_FILE_BYTES)).toString("utf8").trim();
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
