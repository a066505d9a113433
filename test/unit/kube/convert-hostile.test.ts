import test from "ava";
import type { Converted } from "../../../agent/kube/convert-common.js";
import { convertNamespace, convertPod, convertService } from "../../../agent/kube/convert-core.js";
import { convertEndpointSlice } from "../../../agent/kube/convert-discovery.js";
import { convertAuthorizationPolicy, convertPeerAuthentication } from "../../../agent/kube/convert-istio.js";

/**
 * Property-style: converters never throw, whatever the shape, and answer exactly one of record/problem. Valid objects
 * are mutated at random paths with odd values (wrong types, huge strings, prototype keys, deep nesting), plus wholly
 * random values. A seeded generator makes any failure reproducible.
 */

const CONVERTERS: [string, (raw: unknown) => Converted<unknown>, () => Record<string, unknown>][] = [
  [
    "Namespace",
    convertNamespace,
    () => ({ kind: "Namespace", apiVersion: "v1", metadata: { name: "shop", labels: { a: "b" } } }),
  ],
  [
    "Pod",
    convertPod,
    () => ({
      kind: "Pod",
      apiVersion: "v1",
      metadata: {
        name: "p",
        namespace: "shop",
        uid: "u",
        labels: { app: "p", "pod-template-hash": "h" },
        annotations: { "ambit.dev/netns": "/proc/1/ns/net" },
        ownerReferences: [{ kind: "ReplicaSet", name: "p-h", controller: true }],
      },
      spec: { serviceAccountName: "sa", nodeName: "n", hostNetwork: false },
      status: { phase: "Running", podIP: "10.0.0.1", podIPs: [{ ip: "10.0.0.1" }, { ip: "fd00::1" }] },
    }),
  ],
  [
    "Service",
    convertService,
    () => ({
      kind: "Service",
      apiVersion: "v1",
      metadata: { name: "s", namespace: "shop" },
      spec: { clusterIPs: ["10.96.0.1"], ports: [{ name: "http", port: 80, targetPort: "web" }] },
    }),
  ],
  [
    "EndpointSlice",
    convertEndpointSlice,
    () => ({
      kind: "EndpointSlice",
      apiVersion: "discovery.k8s.io/v1",
      metadata: { name: "s-1", namespace: "shop", labels: { "kubernetes.io/service-name": "s" } },
      addressType: "IPv4",
      endpoints: [{ addresses: ["10.0.0.1"], conditions: { ready: true }, targetRef: { kind: "Pod", name: "p" } }],
      ports: [{ name: "http", port: 8080, protocol: "TCP" }],
    }),
  ],
  [
    "PeerAuthentication",
    convertPeerAuthentication,
    () => ({
      kind: "PeerAuthentication",
      apiVersion: "security.istio.io/v1",
      metadata: { name: "pa", namespace: "shop", creationTimestamp: "2026-01-01T00:00:00Z" },
      spec: {
        selector: { matchLabels: { app: "p" } },
        mtls: { mode: "STRICT" },
        portLevelMtls: { "80": { mode: "DISABLE" } },
      },
    }),
  ],
  [
    "AuthorizationPolicy",
    convertAuthorizationPolicy,
    () => ({
      kind: "AuthorizationPolicy",
      apiVersion: "security.istio.io/v1",
      metadata: { name: "ap", namespace: "shop" },
      spec: { selector: { matchLabels: { app: "p" } }, action: "DENY", rules: [{ from: [] }] },
    }),
  ],
];

/** mulberry32: small, seeded, good enough to spread cases. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function oddValue(rand: () => number, depth = 0): unknown {
  const deep = (): unknown => {
    let v: unknown = "x";
    for (let i = 0; i < 200; i++) v = { a: [v] };
    return v;
  };
  const choices: (() => unknown)[] = [
    () => null,
    () => undefined,
    () => 0,
    () => -1,
    () => Number.POSITIVE_INFINITY,
    () => Number.NaN,
    () => 65536,
    () => 3.5,
    () => true,
    () => "",
    () => "None",
    () => "x".repeat(100_000),
    () => "\u0000/\n",
    () => "10.0.0.1",
    () => "fe80::1%eth0",
    () => [],
    () => [null, 1, "a"],
    () => Array(5000).fill({}),
    () => ({}),
    () => JSON.parse('{"__proto__": {"polluted": "yes"}, "constructor": "x"}'),
    () => ({ toString: 1, valueOf: "x", hasOwnProperty: 2 }),
    deep,
    () => (depth < 2 ? { k: oddValue(rand, depth + 1), 8080: oddValue(rand, depth + 1) } : {}),
  ];
  return (choices[Math.floor(rand() * choices.length)] as () => unknown)();
}

/** Every path (as key lists) of plain objects/arrays in `v`. */
function paths(v: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  if (typeof v !== "object" || v === null) return [prefix];
  const out: (string | number)[][] = [prefix];
  for (const [k, child] of Object.entries(v)) out.push(...paths(child, [...prefix, Array.isArray(v) ? Number(k) : k]));
  return out;
}

function setAt(root: Record<string, unknown>, path: (string | number)[], value: unknown): unknown {
  if (path.length === 0) return value;
  let at = root as Record<string | number, unknown>;
  for (const k of path.slice(0, -1)) at = at[k] as Record<string | number, unknown>;
  at[path.at(-1) as string | number] = value;
  return root;
}

function check(
  t: import("ava").ExecutionContext,
  name: string,
  convert: (raw: unknown) => Converted<unknown>,
  raw: unknown,
) {
  let result: Converted<unknown>;
  try {
    result = convert(raw);
  } catch (err) {
    t.fail(`${name} threw ${(err as Error).message}`);
    return;
  }
  const keys = Object.keys(result).sort();
  if (keys.length !== 1 || !(keys[0] === "record" || keys[0] === "problem")) t.fail(`${name} answered ${keys}`);
  if ("problem" in result) {
    if (typeof result.problem !== "string" || !result.problem.startsWith(name)) t.fail(`${name}: ${result.problem}`);
    // Messages quote values, never whole: a 100,000-character value must not end up in a log line.
    if (result.problem.length > 4000) t.fail(`${name}: a ${result.problem.length}-character problem`);
  }
}

test("the valid base objects convert", (t) => {
  for (const [name, convert, base] of CONVERTERS) t.true("record" in convert(base()), name);
});

test("random mutations of valid objects never throw and always answer record xor problem", (t) => {
  const rand = prng(0xa3b1);
  for (const [name, convert, base] of CONVERTERS) {
    const all = paths(base());
    for (let i = 0; i < 600; i++) {
      const raw = base();
      const times = 1 + Math.floor(rand() * 3);
      let mutated: unknown = raw;
      for (let j = 0; j < times && typeof mutated === "object" && mutated !== null; j++) {
        const path = all[Math.floor(rand() * all.length)] as (string | number)[];
        try {
          mutated = setAt(mutated as Record<string, unknown>, path, oddValue(rand));
        } catch {
          // The path went away with an earlier mutation.
        }
      }
      check(t, name, convert, mutated);
    }
    for (let i = 0; i < 100; i++) check(t, name, convert, oddValue(rand));
  }
  t.is(({} as Record<string, unknown>).polluted, undefined);
});

test("a label or matchLabels key __proto__ is refused, never reaching a prototype", (t) => {
  const labels = JSON.parse('{"__proto__": {"app": "x"}}');
  const pod = convertPod({ metadata: { name: "p", namespace: "shop", labels } });
  t.regex("problem" in pod ? pod.problem : "", /invalid keys "__proto__"/);
  const pa = convertPeerAuthentication({
    metadata: { name: "p", namespace: "shop" },
    spec: { selector: { matchLabels: labels } },
  });
  t.regex("problem" in pa ? pa.problem : "", /invalid keys "__proto__"/);
});
