import test from "ava";
import { clusterStateOf } from "../../../agent/kube/cluster-state.js";
import {
  PeerAuthenticationResolver,
  type PolicyTarget,
  peerAuthenticationResolver,
} from "../../../agent/kube/peer-authentication.js";
import type { MtlsMode, MtlsSetting, PeerAuthenticationRecord } from "../../../agent/kube/records.js";

const policy = (
  namespace: string,
  name: string,
  mtls: MtlsSetting,
  extra: Partial<PeerAuthenticationRecord> = {},
): PeerAuthenticationRecord => ({ namespace, name, createdAt: "2026-01-01T00:00:00Z", mtls, ...extra });

const pod = (namespace: string, labels: Record<string, string> = {}): PolicyTarget => ({ namespace, labels });

const MESH_STRICT = policy("istio-system", "default", "STRICT");

test("no policy at all: PERMISSIVE, decided by nothing", (t) => {
  const r = new PeerAuthenticationResolver([]);
  t.is(r.mode(pod("shop"), 80), "PERMISSIVE");
  t.deepEqual(r.explain(pod("shop"), 80), { mode: "PERMISSIVE", level: "default", applied: {} });
});

test("levels: workload > namespace > mesh > PERMISSIVE", (t) => {
  const r = new PeerAuthenticationResolver([
    MESH_STRICT,
    policy("shop", "ns", "DISABLE"),
    policy("shop", "db", "PERMISSIVE", { selector: { app: "db" } }),
  ]);
  t.deepEqual(r.explain(pod("shop", { app: "db", tier: "x" }), 5432), {
    mode: "PERMISSIVE",
    level: "workload",
    policy: "shop/db",
    applied: { workload: "shop/db", namespace: "shop/ns", mesh: "istio-system/default" },
  });
  t.like(r.explain(pod("shop", { app: "web" }), 80), { mode: "DISABLE", level: "namespace", policy: "shop/ns" });
  t.like(r.explain(pod("other", { app: "db" }), 80), { mode: "STRICT", level: "mesh", policy: "istio-system/default" });
});

test("a selector matches only when every matchLabels entry is on the pod", (t) => {
  const r = new PeerAuthenticationResolver([policy("shop", "w", "STRICT", { selector: { app: "db", tier: "data" } })]);
  t.is(r.mode(pod("shop", { app: "db", tier: "data", extra: "1" }), 1), "STRICT");
  t.is(r.mode(pod("shop", { app: "db" }), 1), "PERMISSIVE");
  t.is(r.mode(pod("shop", { app: "db", tier: "DATA" }), 1), "PERMISSIVE");
  // Another namespace's workload policy never applies.
  t.is(r.mode(pod("other", { app: "db", tier: "data" }), 1), "PERMISSIVE");
});

test("UNSET inherits from the next level up, at every level", (t) => {
  const r = new PeerAuthenticationResolver([
    MESH_STRICT,
    policy("shop", "ns", "UNSET"),
    policy("shop", "w", "UNSET", { selector: { app: "db" } }),
  ]);
  t.deepEqual(r.explain(pod("shop", { app: "db" }), 1), {
    mode: "STRICT",
    level: "mesh",
    policy: "istio-system/default",
    applied: { workload: "shop/w", namespace: "shop/ns", mesh: "istio-system/default" },
  });
  // An UNSET mesh policy is PERMISSIVE.
  const unsetMesh = new PeerAuthenticationResolver([policy("istio-system", "default", "UNSET")]);
  t.like(unsetMesh.explain(pod("shop"), 1), { mode: "PERMISSIVE", level: "default" });
});

test("portLevelMtls of the workload policy overrides for its ports; UNSET ports inherit the workload's result", (t) => {
  const r = new PeerAuthenticationResolver([
    policy("shop", "ns", "STRICT"),
    policy("shop", "w", "UNSET", {
      selector: { app: "db" },
      portLevelMtls: { 8080: "DISABLE", 9090: "UNSET", 9091: "PERMISSIVE" },
    }),
  ]);
  const db = pod("shop", { app: "db" });
  t.deepEqual(r.explain(db, 8080), {
    mode: "DISABLE",
    level: "port",
    policy: "shop/w",
    applied: { workload: "shop/w", namespace: "shop/ns" },
  });
  t.is(r.mode(db, 9091), "PERMISSIVE");
  t.like(r.explain(db, 9090), { mode: "STRICT", level: "namespace", policy: "shop/ns" });
  t.is(r.mode(db, 9090), "STRICT");
  t.like(r.explain(db, 5432), { mode: "STRICT", level: "namespace" });
  // Another pod of the namespace is not selected: its 8080 stays STRICT.
  t.is(r.mode(pod("shop", { app: "web" }), 8080), "STRICT");
});

test("portLevelMtls on a policy without selector is ignored (namespace- and mesh-wide)", (t) => {
  const r = new PeerAuthenticationResolver([
    policy("istio-system", "default", "PERMISSIVE", { portLevelMtls: { 81: "STRICT" } }),
    policy("shop", "ns", "STRICT", { portLevelMtls: { 8080: "DISABLE" } }),
  ]);
  t.like(r.explain(pod("shop"), 8080), { mode: "STRICT", level: "namespace" });
  t.like(r.explain(pod("other"), 81), { mode: "PERMISSIVE", level: "mesh" });
});

test("a policy with a selector in the root namespace is ignored everywhere, as Istio does", (t) => {
  const r = new PeerAuthenticationResolver([
    policy("istio-system", "a-selector", "DISABLE", { selector: { app: "db" }, createdAt: "" }),
    policy("istio-system", "default", "STRICT"),
  ]);
  t.like(r.explain(pod("shop", { app: "db" }), 1), { mode: "STRICT", level: "mesh", policy: "istio-system/default" });
  t.like(r.explain(pod("istio-system", { app: "db" }), 1), { mode: "STRICT", level: "mesh" });
  t.deepEqual(r.explain(pod("istio-system", { app: "db" }), 1).applied, { mesh: "istio-system/default" });
});

test("the root namespace is a parameter", (t) => {
  const policies = [policy("mesh-root", "default", "STRICT"), MESH_STRICT];
  t.like(new PeerAuthenticationResolver(policies, "mesh-root").explain(pod("shop"), 1), {
    policy: "mesh-root/default",
  });
  // With the default root, mesh-root is an ordinary namespace: its policy is namespace-wide there only.
  t.like(new PeerAuthenticationResolver(policies).explain(pod("mesh-root"), 1), { level: "namespace" });
});

test("several policies at one level: the oldest wins, then the first by name; in any input order", (t) => {
  const older = policy("shop", "zz-old", "DISABLE", { createdAt: "2025-06-01T00:00:00Z" });
  const newer = policy("shop", "aa-new", "STRICT", { createdAt: "2026-06-01T00:00:00Z" });
  const sameTimeB = policy("shop", "b", "PERMISSIVE", { createdAt: "2025-06-01T00:00:00Z" });
  const w1 = policy("shop", "w-new", "STRICT", { selector: { app: "db" }, createdAt: "2026-02-01T00:00:00Z" });
  const w2 = policy("shop", "w-old", "DISABLE", { selector: { tier: "data" }, createdAt: "2026-01-01T00:00:00+02:00" });
  const manifest = policy("istio-system", "z-manifest", "DISABLE", { createdAt: "" });
  const dated = policy("istio-system", "a-dated", "STRICT", { createdAt: "2020-01-01T00:00:00Z" });
  const all = [older, newer, sameTimeB, w1, w2, manifest, dated];
  const rand = seeded(7);
  for (let i = 0; i < 50; i++) {
    const r = new PeerAuthenticationResolver(shuffle(all, rand));
    // zz-old and b are the oldest, created the same second: the first by name wins.
    t.like(r.explain(pod("shop"), 1), { mode: "PERMISSIVE", policy: "shop/b" });
    // Both workload policies select this pod: the older (w-old, timezone taken into account) wins.
    t.like(r.explain(pod("shop", { app: "db", tier: "data" }), 1), { mode: "DISABLE", policy: "shop/w-old" });
    t.like(r.explain(pod("shop", { app: "db" }), 1), { mode: "STRICT", policy: "shop/w-new" });
    // No creation time (a manifest) is the oldest.
    t.like(r.explain(pod("other"), 1), { mode: "DISABLE", policy: "istio-system/z-manifest" });
  }
  // Age before name: aa-new sorts first by name but is younger.
  t.like(new PeerAuthenticationResolver([newer, older]).explain(pod("shop"), 1), { policy: "shop/zz-old" });
});

test("memoised by the labels object: the same pod record gives the same decision object", (t) => {
  const r = new PeerAuthenticationResolver([policy("shop", "w", "STRICT", { selector: { app: "db" } })]);
  const db = pod("shop", { app: "db" });
  t.is(r.explain(db, 1), r.explain(db, 2));
  t.true(Object.isFrozen(r.explain(db, 1)));
  // A changed pod is a new record with a new labels object: decided afresh.
  t.is(r.mode({ ...db, labels: { app: "web" } }, 1), "PERMISSIVE");
  t.is(r.mode(db, 1), "STRICT");
  // The same labels object in another namespace is resolved for that namespace.
  t.is(r.mode({ namespace: "other", labels: db.labels }, 1), "PERMISSIVE");
});

test("mode() and explain() agree on random policy sets, pods and ports", (t) => {
  const rand = seeded(42);
  const settings: MtlsSetting[] = ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  for (let round = 0; round < 200; round++) {
    const policies: PeerAuthenticationRecord[] = [];
    for (let i = 0; i < 8; i++) {
      const withSelector = rand() < 0.5;
      policies.push(
        policy(pick(["istio-system", "a", "b"]), `p${i}`, pick(settings), {
          createdAt: `2026-01-0${1 + Math.floor(rand() * 9)}T00:00:00Z`,
          ...(withSelector ? { selector: { app: pick(["x", "y"]) } } : {}),
          ...(rand() < 0.5 ? { portLevelMtls: { 80: pick(settings), 81: pick(settings) } } : {}),
        }),
      );
    }
    const r = new PeerAuthenticationResolver(policies);
    for (const ns of ["a", "b", "istio-system"]) {
      for (const app of ["x", "y", "z"]) {
        for (const port of [80, 81, 82]) {
          const target = pod(ns, { app });
          const d = r.explain(target, port);
          t.is(r.mode(target, port), d.mode);
          t.is(d.mode, reference(policies, target, port));
          t.true(d.level === "default" || d.policy !== undefined);
        }
      }
    }
  }
});

test("peerAuthenticationResolver: one resolver per policy map and root namespace", (t) => {
  const state = clusterStateOf({ peerAuthentications: [MESH_STRICT] });
  const r = peerAuthenticationResolver(state);
  t.is(peerAuthenticationResolver({ ...state }), r);
  t.not(peerAuthenticationResolver(state, "other-root"), r);
  t.not(peerAuthenticationResolver(clusterStateOf({ peerAuthentications: [MESH_STRICT] })), r);
  t.is(r.mode(pod("shop"), 1), "STRICT");
});

/** A direct transcription of Istio's ComposePeerAuthentication over the applicable policies, for comparison. */
function reference(policies: PeerAuthenticationRecord[], target: PolicyTarget, port: number): MtlsMode {
  const root = "istio-system";
  const applicable = policies.filter(
    (p) =>
      (p.namespace === target.namespace || p.namespace === root) &&
      Object.entries(p.selector ?? {}).every(([k, v]) => target.labels[k] === v),
  );
  const older = (a: PeerAuthenticationRecord, b: PeerAuthenticationRecord) =>
    a.createdAt < b.createdAt || (a.createdAt === b.createdAt && a.name < b.name);
  let mesh: PeerAuthenticationRecord | undefined;
  let ns: PeerAuthenticationRecord | undefined;
  let wl: PeerAuthenticationRecord | undefined;
  for (const p of applicable) {
    if (!p.selector) {
      if (p.namespace === root) mesh = !mesh || older(p, mesh) ? p : mesh;
      else ns = !ns || older(p, ns) ? p : ns;
    } else if (p.namespace !== root) wl = !wl || older(p, wl) ? p : wl;
  }
  let mode: MtlsMode = "PERMISSIVE";
  for (const p of [mesh, ns, wl]) if (p && p.mtls !== "UNSET") mode = p.mtls;
  const own = wl?.portLevelMtls?.[port];
  return own !== undefined && own !== "UNSET" ? own : mode;
}

function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    return a / 4294967296;
  };
}

function shuffle<T>(xs: readonly T[], rand: () => number): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}
