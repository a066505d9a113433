import type { ExecutionContext } from "ava";
import { KubeApiConfig } from "../../../../agent/kube/api/config.js";
import { KubeApiSource, type KubeApiSourceOptions } from "../../../../agent/kube/api/kube-api-source.js";
import type { ListWatchTiming } from "../../../../agent/kube/api/list-watch.js";
import type { WatchedResource } from "../../../../agent/kube/api/watched-resource.js";
import type { Logger } from "../../../../agent/log.js";
import { KubeApiServer, type KubeApiServerOptions } from "../../../kube-api/server.js";

/** Shared set-up of the list-watch tests: the test API server, a recording sink, short timings, waiting. */

/** Short timings: backoff in tens of ms, a stall noticed in well under a second. */
export const FAST: Partial<ListWatchTiming> = {
  backoff: { baseMs: 20, capMs: 200 },
  stallMs: 1500,
  requestTimeoutMs: 2000,
  listTimeoutMs: 5000,
  healthyAfterMs: 300,
  absentRecheckMs: 200,
  watchTimeoutSeconds: { min: 60, max: 120 },
};

export interface SinkCall {
  op: "upsert" | "remove" | "replace";
  resource: string;
  /** namespace/name of the object (upsert, remove), or of every object (replace). */
  names: string[];
}

// biome-ignore lint/suspicious/noExplicitAny: the sink receives raw API JSON; tests read it freely
type Raw = any;

function keyOf(raw: Raw): string {
  const m = raw?.metadata ?? {};
  return m.namespace ? `${m.namespace}/${m.name}` : String(m.name);
}

/**
 * A WatchSink that records every call and keeps the resulting state per resource, as a store would: a plain
 * object, since the sink is the seam another part of ambit plugs into.
 */
export function recordingSink() {
  const calls: SinkCall[] = [];
  const state = new Map<string, Map<string, Raw>>();
  const of = (resource: string) => {
    let m = state.get(resource);
    if (!m) {
      m = new Map();
      state.set(resource, m);
    }
    return m;
  };
  return {
    calls,
    state,
    upsert(resource: string, raw: unknown) {
      calls.push({ op: "upsert", resource, names: [keyOf(raw)] });
      of(resource).set(keyOf(raw), raw);
    },
    remove(resource: string, raw: unknown) {
      calls.push({ op: "remove", resource, names: [keyOf(raw)] });
      of(resource).delete(keyOf(raw));
    },
    replace(resource: string, raws: readonly unknown[]) {
      calls.push({ op: "replace", resource, names: raws.map(keyOf) });
      state.set(resource, new Map(raws.map((r) => [keyOf(r), r])));
    },
    /** Sorted keys of a resource's current state. */
    keys(resource: string): string[] {
      return [...of(resource).keys()].sort();
    },
    get(resource: string, key: string): Raw {
      return of(resource).get(key);
    },
    /** Calls of one resource, as "op key[,key...]" strings. */
    log(resource: string): string[] {
      return calls.filter((c) => c.resource === resource).map((c) => `${c.op} ${c.names.join(",")}`);
    },
  };
}

export type RecordingSink = ReturnType<typeof recordingSink>;

export async function apiServer(t: ExecutionContext, options: KubeApiServerOptions = {}): Promise<KubeApiServer> {
  const api = await KubeApiServer.start(options);
  t.teardown(() => api.close());
  return api;
}

export const PODS: WatchedResource = { resource: "pods", paths: ["/api/v1/pods"] };

/** A source on a kubeconfig for `api`, closed at teardown. */
export async function source(
  t: ExecutionContext,
  api: KubeApiServer,
  options: Partial<KubeApiSourceOptions> & { logger?: Logger } = {},
): Promise<{ source: KubeApiSource; sink: RecordingSink }> {
  const sink = recordingSink();
  const config = options.config ?? (await KubeApiConfig.fromKubeconfig(await api.writeKubeconfig()));
  const s = new KubeApiSource({
    resources: [PODS],
    sink,
    startTimeoutMs: 10_000,
    ...options,
    config,
    timing: { ...FAST, ...options.timing },
  });
  t.teardown(() => s.close());
  return { source: s, sink: (options.sink as RecordingSink | undefined) ?? sink };
}

/** Polls `check` until it holds, failing with `what` (and the last `detail`) after `ms`. */
export async function until(check: () => boolean, what: string, ms = 10_000, detail?: () => unknown): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) {
      throw new Error(`not within ${ms} ms: ${what}${detail ? ` (${JSON.stringify(detail())})` : ""}`);
    }
    await sleep(10);
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sorted namespace/name keys of what the server holds. */
export function serverKeys(api: KubeApiServer, kind: string, filter: (o: Raw) => boolean = () => true): string[] {
  return api
    .list(kind)
    .filter(filter)
    .map((o) => keyOf(o))
    .sort();
}
