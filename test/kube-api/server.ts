/**
 * A Kubernetes API server for tests: real list/watch over HTTPS on 127.0.0.1, with the real server's paths, list
 * and watch semantics (resourceVersions, limit/continue, label/field selectors, bookmarks, 410 Expired) and
 * Status errors, so a client written against the real API works against it unchanged; plus faults on demand.
 *
 * What a test uses:
 * - `KubeApiServer.start(options)`; `url`, `port`, `caPem`, `token`; `writeKubeconfig()` (path of a kubeconfig for
 *   `--kubeconfig`); `inClusterEnv()` (KUBERNETES_SERVICE_HOST/PORT) + `serviceAccountDir` (`tokenFile`,
 *   `caFile`, namespace) for in-cluster config.
 * - Objects: `apply(obj)`, `applyAll(objs)`, `update(kind, ns, name, fn)`, `patchLabels(...)`,
 *   `delete(kind, ns, name, {graceful})`, `get`, `list`, `resourceVersion`; builders in objects.ts.
 * - TokenReview: `options.tokenUsers` / `setTokenUser(token, {user, audiences})`; `tokenReviewCount`.
 * - Faults: `dropWatches()`, `stallWatches()`/`resumeWatches()`, `compact()`, `failRequests({count, code})`,
 *   `rotateToken()`, `stop()`/`start()`, `restart({keepState, compact})`, `close()` (always, in teardown).
 * - Counters: `requestCount(verb, resource?)`, `openWatches(resource?)`, `waitForWatches(n)`, `unauthorizedCount`.
 *
 * @example
 * const api = await KubeApiServer.start({ bookmarkIntervalMs: 200 });
 * t.teardown(() => api.close());
 * api.applyAll([namespace("shop"), pod({ name: "web-1", namespace: "shop", nodeName: "node-a" })]);
 * const agent = spawnClientUnderTest(["--kubeconfig", await api.writeKubeconfig(), "--node", "node-a"]);
 * await api.waitForWatches(1, "pods");
 * api.patchLabels("Pod", "shop", "web-1", { "ambit.dev/mesh": "enabled" }); // the agent sees MODIFIED
 * api.dropWatches(); // the agent must re-watch from its last resourceVersion and miss nothing
 * api.compact(); // ...or, after this, relist on 410 Expired
 * await api.restart({ keepState: true }); // same port, same objects, every connection cut
 * t.true(api.requestCount("list", "pods") >= 1);
 */
import { randomBytes } from "node:crypto";
import { EventEmitter, once } from "node:events";
import { mkdir, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { kubeconfigYaml, servingCredentials } from "./credentials.js";
import { matcher, parseBool, readJson, selection, sendStatus, sendText, type Verb } from "./http-io.js";
import { parseResourceVersion } from "./list-page.js";
import { mergePatch } from "./merge-patch.js";
import { handleGet, handleList } from "./reads.js";
import { groupVersion, type KubeObject, type ResourceDef, resourceFor, type ServedVersions } from "./resources.js";
import { route } from "./routes.js";
import * as st from "./status.js";
import { ObjectStore, type StoredObject, StoreError, toObject } from "./store.js";
import { reviewToken, type TokenEntry } from "./token-review.js";
import { INITIAL_EVENTS_END, WatchStream } from "./watch-stream.js";
import { handleWrite } from "./writes.js";

export type { Verb } from "./http-io.js";

export interface KubeApiServerOptions {
  /** 0 (default) picks a free port; restart() and start() always reuse the port first bound. */
  port?: number;
  /** The bearer token clients authenticate with; random by default. */
  token?: string;
  /** Tokens TokenReview knows (they also authenticate API requests, as service-account tokens do). */
  tokenUsers?: Record<string, TokenEntry>;
  /** Interval of BOOKMARK events on watches that allow them; default 1000 ms (the real server: about a minute). */
  bookmarkIntervalMs?: number;
  /** Longest a watch stays open (also when the client asks for longer); default 1800 s. */
  maxWatchTimeoutSeconds?: number;
  /** Events kept per resource before the oldest are forgotten (410 for watches from before); default 20,000. */
  historyLimit?: number;
  initialResourceVersion?: number;
  /** Restricts the versions served per group, e.g. `{"security.istio.io": ["v1beta1"]}` for an older Istio. */
  servedVersions?: ServedVersions;
  /** Bytes a watch may have unread before it is ended; default 16 MiB. */
  maxWatchBufferBytes?: number;
}

export interface InjectedFailure {
  /** How many matching requests fail. */
  count: number;
  /** 429, 500, 503 or 504 (the real server's reasons are used); default 500. */
  code?: number;
  verb?: Verb;
  /** Kind or plural; any resource when absent. */
  resource?: string;
  /** Sent as Retry-After and in the Status details. */
  retryAfterSeconds?: number;
}

const OBJECT_VERBS = new Map<string, "get" | "update" | "patch" | "delete">([
  ["GET", "get"],
  ["PUT", "update"],
  ["PATCH", "patch"],
  ["DELETE", "delete"],
]);

export class KubeApiServer {
  readonly caPem: string;
  /** Temporary directory holding the kubeconfig and the service-account files; removed by close(). */
  readonly dir: string;
  /** What a pod sees at /var/run/secrets/kubernetes.io/serviceaccount: token, ca.crt, namespace. */
  readonly serviceAccountDir: string;
  readonly store: ObjectStore;
  readonly #server: Server;
  readonly #options: KubeApiServerOptions;
  readonly #served: ServedVersions;
  #token: string;
  readonly #tokenUsers: Map<string, TokenEntry>;
  #port: number;
  #running = false;
  #closed = false;
  #stalled = false;
  readonly #watches = new Set<WatchStream>();
  /** Every TCP connection, from accept on: closeAllConnections() misses one still in its TLS handshake. */
  readonly #sockets = new Set<Socket>();
  readonly #watchEvents = new EventEmitter();
  readonly #requests = new Map<string, number>();
  #failures: InjectedFailure[] = [];
  #tokenReviews = 0;
  #unauthorized = 0;

  private constructor(
    options: KubeApiServerOptions,
    creds: { caPem: string; certPem: string; keyPem: string },
    dir: string,
  ) {
    this.#options = options;
    this.#served = options.servedVersions ?? {};
    this.caPem = creds.caPem;
    this.dir = dir;
    this.serviceAccountDir = join(dir, "serviceaccount");
    this.#token = options.token ?? randomBytes(24).toString("base64url");
    this.#tokenUsers = new Map(Object.entries(options.tokenUsers ?? {}));
    this.#port = options.port ?? 0;
    this.store = new ObjectStore({
      historyLimit: options.historyLimit,
      initialResourceVersion: options.initialResourceVersion,
    });
    this.store.subscribe((event) => {
      for (const w of this.#watches) if (w.resource === event.resource) w.offer(event);
    });
    this.#server = createServer({ key: creds.keyPem, cert: creds.certPem }, (req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) sendStatus(res, st.failure(500, "InternalError", `test API server: ${String(err)}`));
        else res.destroy();
      });
    });
    this.#server.on("connection", (socket: Socket) => {
      this.#sockets.add(socket);
      socket.once("close", () => this.#sockets.delete(socket));
    });
  }

  /** Starts listening on 127.0.0.1 and writes the service-account files. */
  static async start(options: KubeApiServerOptions = {}): Promise<KubeApiServer> {
    const creds = await servingCredentials();
    const dir = await mkdtemp(join(tmpdir(), "ambit-kube-api-"));
    const server = new KubeApiServer(options, creds, dir);
    await mkdir(server.serviceAccountDir);
    await writeFile(join(server.serviceAccountDir, "ca.crt"), creds.caPem);
    await writeFile(join(server.serviceAccountDir, "namespace"), "default");
    await server.#writeTokenFile();
    await server.start();
    return server;
  }

  get port(): number {
    return this.#port;
  }

  get url(): string {
    return `https://127.0.0.1:${this.#port}`;
  }

  /** The bearer token API requests must carry (changes with rotateToken()). */
  get token(): string {
    return this.#token;
  }

  get tokenFile(): string {
    return join(this.serviceAccountDir, "token");
  }

  get caFile(): string {
    return join(this.serviceAccountDir, "ca.crt");
  }

  /** The environment an in-cluster client reads, with serviceAccountDir standing in for the mounted secret. */
  inClusterEnv(): Record<string, string> {
    return { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: String(this.#port) };
  }

  /**
   * Writes a kubeconfig (cluster server + certificate-authority-data, user token, current context) and returns
   * its path; `tokenFile: true` makes the user read serviceAccountDir/token instead (follows rotateToken()).
   */
  async writeKubeconfig(opts: { path?: string; tokenFile?: boolean; namespace?: string } = {}): Promise<string> {
    const path = opts.path ?? join(this.dir, "kubeconfig");
    const user = opts.tokenFile ? { tokenFile: this.tokenFile } : { token: this.#token };
    await writeFile(path, kubeconfigYaml({ server: this.url, caPem: this.caPem, user, namespace: opts.namespace }));
    return path;
  }

  /** A new bearer token, written to the token file as a projected token is (atomically); the old one stops working. */
  async rotateToken(): Promise<string> {
    this.#token = randomBytes(24).toString("base64url");
    await this.#writeTokenFile();
    return this.#token;
  }

  /** Adds (or with undefined removes) a token TokenReview answers for. */
  setTokenUser(token: string, entry: TokenEntry | undefined): void {
    if (entry) this.#tokenUsers.set(token, entry);
    else this.#tokenUsers.delete(token);
  }

  // ---- objects ------------------------------------------------------------------------------------------------

  /** Create or replace (kind from obj.kind; namespaced objects default to "default"); emits ADDED or MODIFIED. */
  apply(obj: KubeObject): KubeObject {
    const def = this.#defOf(obj);
    return toObject(this.#apply(def, obj), def.kind, groupVersion(def.group, def.versions[0] as string));
  }

  /** apply() for many objects, without reading each back (10,000 pods load in well under a second). */
  applyAll(objects: Iterable<KubeObject>): void {
    for (const obj of objects) this.#apply(this.#defOf(obj), obj);
  }

  get(kind: string, namespace: string, name: string): KubeObject | undefined {
    const def = resourceFor(kind);
    const o = this.store.get(def.plural, namespace, name);
    return o && toObject(o, def.kind, groupVersion(def.group, def.versions[0] as string));
  }

  /** Current objects in key order, of one namespace or all. */
  list(kind: string, namespace?: string): KubeObject[] {
    const def = resourceFor(kind);
    const av = groupVersion(def.group, def.versions[0] as string);
    return this.store
      .sorted(def.plural)
      .filter((o) => namespace === undefined || o.namespace === namespace)
      .map((o) => toObject(o, def.kind, av));
  }

  /** Read-modify-write of one object (`fn` may mutate its argument or return a replacement); emits MODIFIED. */
  update(kind: string, namespace: string, name: string, fn: (obj: KubeObject) => KubeObject | undefined): KubeObject {
    const current = this.get(kind, namespace, name);
    if (!current) throw new StoreError("not_found", `${kind} ${namespace}/${name} not found`);
    const next = fn(current) ?? current;
    next.metadata = { ...next.metadata, resourceVersion: undefined };
    return this.apply(next);
  }

  /** Merges labels (null removes one); emits MODIFIED. */
  patchLabels(kind: string, namespace: string, name: string, labels: Record<string, string | null>): KubeObject {
    return this.update(kind, namespace, name, (o) => mergePatch(o, { metadata: { labels } }) as KubeObject);
  }

  /**
   * Deletes, emitting DELETED with the last state. `graceful` first only marks the object (deletionTimestamp,
   * MODIFIED), as a pod looks while it terminates; a second delete removes it.
   */
  delete(kind: string, namespace: string, name: string, opts: { graceful?: boolean } = {}): KubeObject {
    const def = resourceFor(kind);
    const current = this.get(kind, namespace, name);
    if (opts.graceful && current && !current.metadata.deletionTimestamp) {
      return this.update(kind, namespace, name, (o) => {
        o.metadata.deletionTimestamp = new Date(Math.floor(Date.now() / 1000) * 1000)
          .toISOString()
          .replace(".000Z", "Z");
        o.metadata.deletionGracePeriodSeconds = 30;
        return o;
      });
    }
    const gone = this.store.delete(def.plural, namespace, name);
    return toObject(gone, def.kind, groupVersion(def.group, def.versions[0] as string));
  }

  get resourceVersion(): string {
    return String(this.store.resourceVersion);
  }

  // ---- counters -------------------------------------------------------------------------------------------------

  /** Requests by verb, for one resource (kind or plural) or all; failed and injected-failure requests count too. */
  requestCount(verb: Verb, resource?: string): number {
    if (resource !== undefined) return this.#requests.get(`${verb} ${resourceFor(resource).plural}`) ?? 0;
    let n = 0;
    for (const [key, count] of this.#requests) if (key.startsWith(`${verb} `)) n += count;
    return n;
  }

  /** Requests refused with 401. */
  get unauthorizedCount(): number {
    return this.#unauthorized;
  }

  get tokenReviewCount(): number {
    return this.#tokenReviews;
  }

  openWatches(resource?: string): number {
    const plural = resource === undefined ? undefined : resourceFor(resource).plural;
    let n = 0;
    for (const w of this.#watches) if (plural === undefined || w.resource === plural) n++;
    return n;
  }

  /** Resolves once at least `count` watches (of `resource`, or any) are open. */
  async waitForWatches(count: number, resource?: string, timeoutMs = 10_000): Promise<void> {
    if (this.openWatches(resource) >= count) return;
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (this.openWatches(resource) < count) return;
        cleanup();
        resolve();
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(`${this.openWatches(resource)} of ${count} ${resource ?? ""} watches open after ${timeoutMs} ms`),
        );
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.#watchEvents.off("change", check);
      };
      this.#watchEvents.on("change", check);
    });
  }

  // ---- faults ---------------------------------------------------------------------------------------------------

  /** Destroys every open watch connection (of `resource`, or all) abruptly: no final chunk. */
  dropWatches(resource?: string): void {
    const plural = resource === undefined ? undefined : resourceFor(resource).plural;
    for (const w of [...this.#watches]) if (plural === undefined || w.resource === plural) w.drop();
  }

  /** Open and new watches send nothing (no events, no bookmarks, no timeout end) until resumeWatches(). */
  stallWatches(): void {
    this.#stalled = true;
    for (const w of this.#watches) w.stall();
  }

  /** Delivers what happened meanwhile, then carries on. */
  resumeWatches(): void {
    this.#stalled = false;
    for (const w of [...this.#watches]) w.resume();
  }

  /** Forgets all history: watches and continue tokens from older resourceVersions get 410 Expired. */
  compact(): void {
    this.store.compact();
  }

  /** The next `count` matching requests fail with `code` (a Status with the real server's reason). */
  failRequests(failure: InjectedFailure): void {
    this.#failures.push({ ...failure });
  }

  /** Closes the listener and every connection (watches end abruptly): the server is unreachable until start(). */
  async stop(): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    const closed = once(this.#server, "close");
    this.#server.close();
    // A client reconnecting at this moment may be mid-handshake, which closeAllConnections() does not see; it
    // would then send a watch that never ends and keep 'close' from firing (a CI run hung here).
    for (const socket of this.#sockets) socket.destroy();
    this.#server.closeAllConnections();
    for (const w of [...this.#watches]) w.drop();
    await closed;
  }

  /** Listens again, on the same port once one was bound. */
  async start(): Promise<void> {
    if (this.#closed) throw new Error("the test API server is closed");
    if (this.#running) return;
    this.#server.listen(this.#port, "127.0.0.1");
    await once(this.#server, "listening");
    this.#port = (this.#server.address() as AddressInfo).port;
    this.#running = true;
  }

  /**
   * stop() then start() on the same port. keepState (default true) keeps objects and history, so watches resume;
   * `compact` forgets history as a real API server's fresh watch cache does; keepState false starts empty with
   * the resourceVersion bumped past every old one (an etcd restored from backup), so every old one gets 410.
   */
  async restart(opts: { keepState?: boolean; compact?: boolean } = {}): Promise<void> {
    await this.stop();
    if (opts.keepState === false) this.store.reset();
    else if (opts.compact) this.store.compact();
    await this.start();
  }

  /** Stops for good and removes the temporary files; nothing is left to keep the process alive. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.stop();
    this.#closed = true;
    this.#watchEvents.removeAllListeners();
    await rm(this.dir, { recursive: true, force: true });
  }

  // ---- HTTP -------------------------------------------------------------------------------------------------------

  async #writeTokenFile(): Promise<void> {
    const tmp = join(this.serviceAccountDir, `.token.${process.pid}.tmp`);
    await writeFile(tmp, this.#token);
    await rename(tmp, this.tokenFile);
  }

  #apply(def: ResourceDef, obj: KubeObject): StoredObject {
    const meta = { ...obj.metadata };
    if (def.namespaced) meta.namespace ??= "default";
    return this.store.apply(def.plural, { ...obj, metadata: meta });
  }

  #defOf(obj: KubeObject): ResourceDef {
    if (typeof obj?.kind !== "string") throw new StoreError("invalid", "kind: Required value");
    const def = resourceFor(obj.kind);
    if (obj.apiVersion !== undefined && !def.versions.some((v) => groupVersion(def.group, v) === obj.apiVersion)) {
      throw new StoreError("invalid", `apiVersion ${obj.apiVersion} does not serve kind ${obj.kind}`);
    }
    return def;
  }

  #authenticated(req: IncomingMessage): boolean {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "");
    const token = m?.[1];
    return token !== undefined && (token === this.#token || this.#tokenUsers.has(token));
  }

  #count(verb: Verb, def: ResourceDef): void {
    const key = `${verb} ${def.plural}`;
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
  }

  /** Answers with an injected failure if one matches; true if it did. */
  #injected(res: ServerResponse, verb: Verb, def: ResourceDef): boolean {
    const i = this.#failures.findIndex(
      (f) => (f.verb === undefined || f.verb === verb) && (f.resource === undefined || resourceFor(f.resource) === def),
    );
    const f = this.#failures[i];
    if (!f) return false;
    if (--f.count <= 0) this.#failures.splice(i, 1);
    const headers: Record<string, string> =
      f.retryAfterSeconds === undefined ? {} : { "retry-after": String(f.retryAfterSeconds) };
    sendStatus(res, st.injected(f.code ?? 500, f.retryAfterSeconds), headers);
    return true;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!this.#authenticated(req)) {
      this.#unauthorized++;
      req.resume();
      sendStatus(res, st.unauthorized());
      return;
    }
    const url = new URL(req.url ?? "/", "https://127.0.0.1");
    const r = route(url.pathname, this.#served);
    const method = req.method ?? "GET";
    switch (r.type) {
      case "none":
        req.resume();
        return sendStatus(res, st.pathNotFound());
      case "text":
        req.resume();
        res.writeHead(200, { "content-type": "text/plain; charset=utf-8" }).end(r.body);
        return;
      case "document":
        req.resume();
        return method === "GET"
          ? sendText(res, 200, JSON.stringify(r.body))
          : sendStatus(res, st.methodNotAllowed(method));
      case "tokenreviews":
        return this.#tokenReview(req, res, method);
      case "collection": {
        const q = url.searchParams;
        if (method === "GET") {
          const watch = parseBool(q.get("watch"));
          if (watch === "invalid") return sendStatus(res, st.badRequest(`invalid watch parameter "${q.get("watch")}"`));
          const verb: Verb = watch ? "watch" : "list";
          this.#count(verb, r.def);
          if (this.#injected(res, verb, r.def)) return;
          return watch
            ? this.#watch(res, r.def, r.version, r.namespace, q)
            : handleList(this.store, res, r.def, r.version, r.namespace, q);
        }
        if (method === "POST" && (r.namespace !== undefined || !r.def.namespaced)) {
          this.#count("create", r.def);
          if (this.#injected(res, "create", r.def)) {
            req.resume();
            return;
          }
          return handleWrite(this.store, req, res, "create", r.def, r.version, r.namespace, undefined);
        }
        req.resume();
        return sendStatus(res, st.methodNotAllowed(method));
      }
      case "object": {
        const verb = OBJECT_VERBS.get(method);
        if (!verb) {
          req.resume();
          return sendStatus(res, st.methodNotAllowed(method));
        }
        this.#count(verb, r.def);
        if (this.#injected(res, verb, r.def)) {
          req.resume();
          return;
        }
        if (verb === "get") {
          req.resume();
          return handleGet(this.store, res, r.def, r.version, r.namespace, r.name);
        }
        return handleWrite(this.store, req, res, verb, r.def, r.version, r.namespace, r.name);
      }
    }
  }

  #watch(res: ServerResponse, def: ResourceDef, version: string, namespace: string | undefined, q: URLSearchParams) {
    const sel = selection(def, namespace, q);
    if ("kind" in sel) return sendStatus(res, sel);
    const rv = parseResourceVersion(q.get("resourceVersion") ?? undefined);
    if (typeof rv === "object") return sendStatus(res, rv);
    const bookmarks = parseBool(q.get("allowWatchBookmarks"));
    const initialEvents = parseBool(q.get("sendInitialEvents"));
    if (bookmarks === "invalid" || initialEvents === "invalid") {
      return sendStatus(res, st.badRequest("allowWatchBookmarks and sendInitialEvents must be booleans"));
    }
    const match = q.get("resourceVersionMatch");
    if (initialEvents !== undefined && match !== "NotOlderThan") {
      return sendStatus(res, st.badRequest('sendInitialEvents requires resourceVersionMatch "NotOlderThan"'));
    }
    if (initialEvents === undefined && match !== null) {
      return sendStatus(
        res,
        st.badRequest("resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"),
      );
    }
    if (initialEvents === true && bookmarks !== true) {
      return sendStatus(res, st.badRequest("sendInitialEvents requires allowWatchBookmarks=true"));
    }
    const rawTimeout = q.get("timeoutSeconds");
    if (rawTimeout !== null && !/^\d{1,9}$/.test(rawTimeout)) {
      return sendStatus(res, st.badRequest(`invalid timeoutSeconds "${rawTimeout}"`));
    }
    const max = this.#options.maxWatchTimeoutSeconds ?? 1800;
    const timeoutSec = rawTimeout === null || rawTimeout === "0" ? max : Math.min(Number(rawTimeout), max);
    const current = this.store.resourceVersion;
    const fromState = initialEvents === true || (initialEvents === undefined && (rv === undefined || rv === 0));
    const sinceRv = fromState || rv === undefined || rv === 0 ? current : rv;
    const matches = matcher(sel);
    const stream = new WatchStream({
      res,
      resource: def.plural,
      kind: def.kind,
      apiVersion: groupVersion(def.group, version),
      matches,
      sinceRv,
      bookmarkIntervalMs: bookmarks === true ? (this.#options.bookmarkIntervalMs ?? 1000) : 0,
      timeoutMs: timeoutSec * 1000,
      currentRv: () => this.store.resourceVersion,
      stalled: this.#stalled,
      maxBufferedBytes: this.#options.maxWatchBufferBytes ?? 16 * 1024 * 1024,
      maxQueuedEvents: 100_000,
      onClose: (w) => {
        this.#watches.delete(w);
        this.#watchEvents.emit("change");
      },
    });
    this.#watches.add(stream);
    this.#watchEvents.emit("change");
    if (fromState) {
      stream.initial(this.store.sorted(def.plural));
      if (initialEvents === true) stream.bookmark(current, { [INITIAL_EVENTS_END]: "true" });
      return;
    }
    if (rv === undefined || rv === 0) return;
    try {
      for (const event of this.store.eventsSince(def.plural, rv)) stream.offer(event);
    } catch (err) {
      if (!(err instanceof StoreError && err.code === "expired")) throw err;
      stream.error(st.expired(err.message));
    }
  }

  async #tokenReview(req: IncomingMessage, res: ServerResponse, method: string): Promise<void> {
    if (method !== "POST") {
      req.resume();
      return sendStatus(res, st.methodNotAllowed(method));
    }
    const body = await readJson(req, res);
    if (body === undefined) return;
    this.#tokenReviews++;
    const answer = reviewToken(body, this.#tokenUsers);
    sendText(res, answer.code, JSON.stringify(answer.body));
  }
}
