import { dirname, isAbsolute, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { KubeApiError } from "./errors.js";

/**
 * A kubeconfig, read the way client-go reads it, down to what one context needs: the cluster's server and TLS
 * settings and the user's credentials. Pure: files the kubeconfig names are returned as paths (made absolute
 * against the kubeconfig's directory) for the caller to read at each request, so a rotated file is used at once.
 *
 * Only what KubeApiConfig supports is interpreted; unknown keys (preferences, extensions, as-groups, ...) are
 * ignored, as by @kubernetes/client-node. Every value that is interpreted is type-checked, in every entry (the
 * library also refused a kubeconfig with a broken entry it did not use), and a wrong one is a kubeconfig_invalid
 * error naming the field.
 */

/** Where a piece of TLS material comes from: a file read for every request, or bytes given inline. */
export type TlsMaterial = { file: string } | { data: Buffer };

export interface KubeconfigCluster {
  /** https://host[:port][/prefix], without a trailing slash. */
  server: string;
  ca?: TlsMaterial;
  insecureSkipTlsVerify: boolean;
  tlsServerName?: string;
}

/** A user whose credentials only @kubernetes/client-node's plugins can produce. */
export type KubeconfigPlugin = { kind: "exec"; command: string } | { kind: "auth-provider"; name: string };

export interface KubeconfigUser {
  /** Inline bearer token (wins over tokenFile, as in client-go). */
  token?: string;
  tokenFile?: string;
  cert?: TlsMaterial;
  key?: TlsMaterial;
  username?: string;
  password?: string;
  /** `as`: sent as Impersonate-User. */
  impersonate?: string;
  plugin?: KubeconfigPlugin;
}

export interface KubeconfigSelection {
  context: string;
  cluster: KubeconfigCluster;
  /** Empty when the context names no user (anonymous, TLS settings only). */
  user: KubeconfigUser;
}

/** A kubeconfig is a few KB even with inline certificates; anything near this is not one. */
export const MAX_KUBECONFIG_BYTES = 1024 * 1024;

type Mapping = Record<string, unknown>;

class Reader {
  readonly #origin: string;

  constructor(origin: string) {
    this.#origin = origin;
  }

  fail(message: string): never {
    throw new KubeApiError("kubeconfig_invalid", `${this.#origin}: ${message}`);
  }

  /** null and absent read as absent, as in client-go (JSON null for an omitted field). */
  mapping(value: unknown, field: string): Mapping | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== "object" || Array.isArray(value)) this.fail(`${field} must be a mapping, not ${kind(value)}`);
    return value as Mapping;
  }

  list(value: unknown, field: string): unknown[] {
    if (value === undefined || value === null) return [];
    if (!Array.isArray(value)) this.fail(`${field} must be a list, not ${kind(value)}`);
    return value;
  }

  /** An empty string reads as absent, as client-go treats its zero value. */
  string(m: Mapping, key: string, field: string): string | undefined {
    const v = m[key];
    if (v === undefined || v === null || v === "") return undefined;
    if (typeof v !== "string") this.fail(`${field}.${key} must be a string, not ${kind(v)}`);
    return v;
  }

  boolean(m: Mapping, key: string, field: string): boolean {
    const v = m[key];
    if (v === undefined || v === null) return false;
    if (typeof v !== "boolean") this.fail(`${field}.${key} must be true or false, not ${kind(v)}`);
    return v;
  }

  base64(m: Mapping, key: string, field: string): Buffer | undefined {
    const v = this.string(m, key, field);
    if (v === undefined) return undefined;
    // Buffer.from(…, "base64") skips what it does not understand; a typo would surface as a TLS error much later.
    const compact = v.replace(/\s+/g, "");
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(compact) || compact.length % 4 === 1) {
      this.fail(`${field}.${key} is not base64`);
    }
    return Buffer.from(compact, "base64");
  }
}

function kind(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v !== "object") return `a ${typeof v}`;
  // YAML 1.1 also has !!timestamp (2026-01-01 unquoted) and !!binary.
  return Object.getPrototypeOf(v) === Object.prototype ? "a mapping" : `a ${v.constructor.name}`;
}

interface Named {
  name: string;
  body: Mapping;
}

/** The entries of `clusters`, `users` or `contexts`: each `{name, <key>: {...}}`. */
function namedEntries(r: Reader, doc: Mapping, list: string, key: string): Named[] {
  return r.list(doc[list], list).map((entry, i) => {
    const field = `${list}[${i}]`;
    const m = r.mapping(entry, field) ?? r.fail(`${field} must be a mapping, not null`);
    const name = r.string(m, "name", field) ?? r.fail(`${field}.name is missing`);
    return { name, body: r.mapping(m[key], `${field} ("${name}").${key}`) ?? {} };
  });
}

function material(r: Reader, m: Mapping, field: string, fileKey: string, base: string): TlsMaterial | undefined {
  // The file wins over inline data, as in @kubernetes/client-node (client-go prefers the data; both at once is
  // a mistake either way).
  const file = r.string(m, fileKey, field);
  if (file !== undefined) return { file: absolute(base, file) };
  const data = r.base64(m, `${fileKey}-data`, field);
  return data === undefined ? undefined : { data };
}

const absolute = (base: string, file: string) => (isAbsolute(file) ? file : resolve(base, file));

function readCluster(r: Reader, entry: Named, field: string, base: string): KubeconfigCluster & { proxyUrl?: string } {
  const c = entry.body;
  const server = (r.string(c, "server", field) ?? r.fail(`${field}.server is missing`)).replace(/\/+$/, "");
  const cluster: KubeconfigCluster & { proxyUrl?: string } = {
    server,
    insecureSkipTlsVerify: r.boolean(c, "insecure-skip-tls-verify", field),
  };
  const ca = material(r, c, field, "certificate-authority", base);
  if (ca) cluster.ca = ca;
  const tlsServerName = r.string(c, "tls-server-name", field);
  if (tlsServerName !== undefined) cluster.tlsServerName = tlsServerName;
  const proxyUrl = r.string(c, "proxy-url", field);
  if (proxyUrl !== undefined) cluster.proxyUrl = proxyUrl;
  return cluster;
}

function readUser(r: Reader, entry: Named, field: string, base: string): KubeconfigUser {
  const u = entry.body;
  const user: KubeconfigUser = {};
  const set = <K extends keyof KubeconfigUser>(k: K, v: KubeconfigUser[K] | undefined) => {
    if (v !== undefined) user[k] = v;
  };
  const token = r.string(u, "token", field);
  // node:https throws on a header it cannot send; say which field instead.
  if (token !== undefined && !/^[!-~]+$/.test(token)) r.fail(`${field}.token is not a usable bearer token`);
  set("token", token);
  // client-go's key is tokenFile; token-file is what @kubernetes/client-node knew, so both are honoured.
  const tokenFile = r.string(u, "tokenFile", field) ?? r.string(u, "token-file", field);
  if (tokenFile !== undefined) user.tokenFile = absolute(base, tokenFile);
  set("cert", material(r, u, field, "client-certificate", base));
  set("key", material(r, u, field, "client-key", base));
  set("username", r.string(u, "username", field));
  set("password", r.string(u, "password", field));
  set("impersonate", r.string(u, "as", field));
  const exec = r.mapping(u.exec, `${field}.exec`);
  const provider = r.mapping(u["auth-provider"], `${field}.auth-provider`);
  if (exec) {
    user.plugin = { kind: "exec", command: r.string(exec, "command", `${field}.exec`) ?? "" };
  } else if (provider) {
    user.plugin = { kind: "auth-provider", name: r.string(provider, "name", `${field}.auth-provider`) ?? "" };
  }
  return user;
}

/** Requests go out on node:https to this base URL; only the cluster in use must be reachable that way. */
function checkServer(r: Reader, server: string): void {
  if (!server.startsWith("https://")) r.fail(`server ${server} is not https://`);
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    r.fail(`server ${server} is not a URL`);
  }
  if (url.search || url.hash || url.username || url.password) {
    r.fail(`server ${server} must be https://host[:port][/path], without credentials, query or fragment`);
  }
}

/** Parses `text` (the kubeconfig at `path`) and picks `context`, or its current-context. */
export function parseKubeconfig(text: string, path: string, options: { context?: string } = {}): KubeconfigSelection {
  const r = new Reader(`kubeconfig ${path}`);
  if (Buffer.byteLength(text) > MAX_KUBECONFIG_BYTES) r.fail(`larger than ${MAX_KUBECONFIG_BYTES} bytes`);
  let parsed: unknown;
  try {
    // YAML 1.1, as client-go reads kubeconfigs (sigs.k8s.io/yaml): `insecure-skip-tls-verify: yes` is true there.
    parsed = parseYaml(text, { version: "1.1", maxAliasCount: 100, prettyErrors: true });
  } catch (cause) {
    throw new KubeApiError("kubeconfig_invalid", `kubeconfig ${path}: not YAML: ${(cause as Error).message}`, {
      cause,
    });
  }
  const doc = r.mapping(parsed, "the document") ?? r.fail("empty");
  const base = dirname(path);
  const clusters = namedEntries(r, doc, "clusters", "cluster");
  const users = namedEntries(r, doc, "users", "user");
  const contexts = namedEntries(r, doc, "contexts", "context");
  // Every entry is checked, used or not, so a mistake is reported before the day the context changes.
  const readClusters = clusters.map((c, i) => readCluster(r, c, `clusters[${i}] ("${c.name}").cluster`, base));
  const readUsers = users.map((u, i) => readUser(r, u, `users[${i}] ("${u.name}").user`, base));
  const readContexts = contexts.map((c, i) => {
    const field = `contexts[${i}] ("${c.name}").context`;
    const cluster = r.string(c.body, "cluster", field) ?? r.fail(`${field}.cluster is missing`);
    r.string(c.body, "namespace", field); // not used (ambit names namespaces itself), but type-checked all the same
    return { name: c.name, cluster, user: r.string(c.body, "user", field) };
  });

  const current = r.string(doc, "current-context", "the document");
  const name = options.context ?? current ?? r.fail("no current-context, and no context was given");
  // The first entry of a name wins, as in @kubernetes/client-node.
  const context = readContexts.find((c) => c.name === name);
  if (!context) throw new KubeApiError("kubeconfig_invalid", `kubeconfig ${path} has no context "${name}"`);
  const ci = clusters.findIndex((c) => c.name === context.cluster);
  const cluster =
    readClusters[ci] ?? r.fail(`context "${name}" names cluster "${context.cluster}", which is not in clusters`);
  checkServer(r, cluster.server);
  if (cluster.proxyUrl !== undefined) r.fail(`proxy-url is not supported (${cluster.proxyUrl})`);
  let user: KubeconfigUser = {};
  if (context.user !== undefined) {
    const ui = users.findIndex((u) => u.name === context.user);
    user = readUsers[ui] ?? r.fail(`context "${name}" names user "${context.user}", which is not in users`);
  }
  if (!user.plugin && (user.cert === undefined) !== (user.key === undefined)) {
    r.fail(
      `user "${context.user}" has a client ${user.cert ? "certificate without a key" : "key without a certificate"}`,
    );
  }
  return { context: name, cluster, user };
}
