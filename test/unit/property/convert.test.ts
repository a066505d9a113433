import { isIP } from "node:net";
import { fc, testProp } from "@fast-check/ava";
import type { ExecutionContext } from "ava";
import {
  type Converted,
  isDnsLabel,
  isLabelKey,
  isLabelValue,
  isSubdomain,
} from "../../../agent/kube/convert-common.js";
import { convertNamespace, convertPod, convertService } from "../../../agent/kube/convert-core.js";
import { convertEndpointSlice } from "../../../agent/kube/convert-discovery.js";
import { convertAuthorizationPolicy, convertPeerAuthentication } from "../../../agent/kube/convert-istio.js";
import type {
  AuthorizationPolicyRecord,
  EndpointSliceRecord,
  NamespaceRecord,
  PeerAuthenticationRecord,
  PodRecord,
  ServiceRecord,
} from "../../../agent/kube/records.js";
import "./settings.js";

/**
 * The record converters take manifests anyone could write: any JSON object either converts to a record whose every
 * field is what the rest of the agent assumes (names DNS-1123, addresses IP literals of the right family, ports
 * 1-65535, closed sets closed), or is refused with a problem naming its kind; they never throw.
 */

// Values: mostly plausible, some valid, some of any JSON type, some with prototype keys (only JSON.parse makes a
// "__proto__" own key, as a manifest loader would).
const junk = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom(null, "", "None", -1, 0, 65536, 3.5, true, [], {}, "fe80::1%eth0", "x".repeat(300)),
  fc.constant(0).map(() => JSON.parse('{"__proto__": {"polluted": "yes"}, "constructor": "x"}')),
);
// One field in twenty is junk: an object has some fifteen fields, so about half the objects are valid throughout and
// the checks on records run as often as those on problems.
const or = <T>(valid: fc.Arbitrary<T>) => fc.oneof({ weight: 19, arbitrary: valid }, { weight: 1, arbitrary: junk });
const label = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?$/);
const subdomain = fc.oneof(
  label,
  fc.tuple(label, label).map(([a, b]) => `${a}.${b}`),
);
const ip = fc.oneof(
  { weight: 6, arbitrary: fc.oneof(fc.ipV4(), fc.ipV6(), fc.constantFrom("10.0.0.1", "fd00::1", "::ffff:10.0.0.1")) },
  { weight: 1, arbitrary: fc.constantFrom("fe80::1%eth0", "10.0.0.01", "10.0.0.1/24") },
);
const port = fc.oneof(fc.integer({ min: 1, max: 65535 }), fc.constantFrom(80, 8080));
const labels = or(
  fc.dictionary(
    fc.oneof(
      { weight: 10, arbitrary: fc.oneof(label, fc.constantFrom("pod-template-hash", "kubernetes.io/service-name")) },
      { weight: 1, arbitrary: fc.constantFrom("Bad Key", "a/b/c", "-x") },
    ),
    or(fc.oneof(label, fc.constant(""))),
    { maxKeys: 4 },
  ),
);
const metadata = (namespaced: boolean) =>
  or(
    fc.record(
      {
        name: or(subdomain),
        ...(namespaced ? { namespace: or(label) } : {}),
        uid: or(fc.uuid()),
        labels,
        annotations: or(fc.record({ "ambit.dev/netns": or(fc.constantFrom("/proc/1/ns/net", "/run/netns/a")) })),
        ownerReferences: or(
          fc.array(
            or(
              fc.record({
                kind: or(fc.constantFrom("ReplicaSet", "StatefulSet")),
                name: or(subdomain),
                controller: or(fc.boolean()),
              }),
            ),
            { maxLength: 2 },
          ),
        ),
        deletionTimestamp: or(fc.constantFrom("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5+02:00")),
        creationTimestamp: or(fc.date({ noInvalidDate: true }).map((d) => d.toISOString())),
      },
      { requiredKeys: namespaced ? ["name", "namespace"] : ["name"] },
    ),
  );
const header = (kind: string, apiVersion: string) => ({
  kind: fc.oneof({ weight: 5, arbitrary: fc.constant(kind) }, { weight: 1, arbitrary: junk }),
  apiVersion: fc.oneof({ weight: 5, arbitrary: fc.constant(apiVersion) }, { weight: 1, arbitrary: junk }),
});

const namespaceArb = fc.record(
  { ...header("Namespace", "v1"), metadata: metadata(false) },
  { requiredKeys: ["metadata"] },
);
const podArb = fc.record(
  {
    ...header("Pod", "v1"),
    metadata: metadata(true),
    spec: or(
      fc.record(
        { serviceAccountName: or(subdomain), nodeName: or(subdomain), hostNetwork: or(fc.boolean()) },
        { requiredKeys: [] },
      ),
    ),
    status: or(
      fc.record(
        {
          phase: or(fc.constantFrom("Pending", "Running", "Failed")),
          podIP: or(ip),
          podIPs: or(fc.array(or(fc.record({ ip: or(ip) })), { maxLength: 2 })),
        },
        { requiredKeys: ["podIPs"] },
      ),
    ),
  },
  { requiredKeys: ["metadata", "spec", "status"] },
);
const serviceArb = fc.record(
  {
    ...header("Service", "v1"),
    metadata: metadata(true),
    spec: or(
      fc.record(
        {
          type: or(fc.constantFrom("ClusterIP", "ExternalName")),
          clusterIP: or(fc.oneof(ip, fc.constant("None"))),
          clusterIPs: or(fc.array(or(ip), { maxLength: 3 })),
          ports: or(
            fc.array(
              or(
                fc.record(
                  {
                    name: or(label),
                    port: or(port),
                    protocol: or(fc.constantFrom("TCP", "UDP", "HTTP")),
                    targetPort: or(fc.oneof(port, fc.constantFrom("web", "8080", "a--b"))),
                  },
                  { requiredKeys: [] },
                ),
              ),
              { maxLength: 3 },
            ),
          ),
        },
        { requiredKeys: ["clusterIPs", "ports"] },
      ),
    ),
  },
  { requiredKeys: ["metadata", "spec"] },
);
const sliceArb = fc.constantFrom("IPv4", "IPv6", "FQDN").chain((type) => {
  const address = type === "IPv4" ? fc.ipV4() : type === "IPv6" ? fc.ipV6() : subdomain;
  return fc.record(
    {
      ...header("EndpointSlice", "discovery.k8s.io/v1"),
      metadata: metadata(true).map((m) =>
        typeof m === "object" && m !== null && !Array.isArray(m) && typeof m.labels !== "object"
          ? { ...m, labels: { "kubernetes.io/service-name": "svc" } }
          : m,
      ),
      addressType: or(fc.constant(type)),
      endpoints: or(
        fc.array(
          or(
            fc.record(
              {
                addresses: or(fc.array(or(address), { minLength: 1, maxLength: 3 })),
                conditions: or(fc.record({ ready: or(fc.boolean()) }, { requiredKeys: [] })),
                nodeName: or(subdomain),
                targetRef: or(
                  fc.record(
                    { kind: or(fc.constant("Pod")), name: or(subdomain), namespace: or(label) },
                    { requiredKeys: [] },
                  ),
                ),
              },
              { requiredKeys: ["addresses"] },
            ),
          ),
          { maxLength: 3 },
        ),
      ),
      ports: or(
        fc.array(
          or(fc.record({ name: or(label), port: or(port), protocol: or(fc.constant("TCP")) }, { requiredKeys: [] })),
          { maxLength: 3 },
        ),
      ),
    },
    { requiredKeys: ["metadata", "addressType"] },
  );
});
const selector = or(fc.record({ matchLabels: labels }, { requiredKeys: [] }));
const mode = or(
  fc.record({ mode: or(fc.constantFrom("UNSET", "DISABLE", "PERMISSIVE", "STRICT", "strict")) }, { requiredKeys: [] }),
);
const peerAuthArb = fc.record(
  {
    ...header("PeerAuthentication", "security.istio.io/v1"),
    metadata: metadata(true),
    spec: or(
      fc.record(
        {
          selector,
          mtls: mode,
          portLevelMtls: or(fc.dictionary(fc.oneof(port.map(String), fc.string()), mode, { maxKeys: 3 })),
        },
        { requiredKeys: [] },
      ),
    ),
  },
  { requiredKeys: ["metadata"] },
);
const authzArb = fc.record(
  {
    ...header("AuthorizationPolicy", "security.istio.io/v1beta1"),
    metadata: metadata(true),
    spec: or(
      fc.record(
        {
          selector,
          action: or(fc.constantFrom("ALLOW", "DENY", "AUDIT", "CUSTOM", "deny")),
          rules: or(fc.array(or(fc.record({ from: fc.array(junk, { maxLength: 2 }) })), { maxLength: 3 })),
          targetRef: junk,
        },
        { requiredKeys: [] },
      ),
    ),
  },
  { requiredKeys: ["metadata"] },
);

/** Converts `raw` and checks the answer's shape; the record, when there is one, for the caller's checks. */
function convert<T>(
  t: ExecutionContext,
  kind: string,
  fn: (raw: unknown) => Converted<T>,
  raw: unknown,
): T | undefined {
  const result = fn(raw);
  t.deepEqual(Object.keys(result).length, 1);
  if ("problem" in result) {
    t.is(typeof result.problem, "string");
    t.true(result.problem.startsWith(`${kind}`), result.problem);
    t.true(result.problem.length < 4000);
    return undefined;
  }
  return result.record;
}

function checkLabels(t: ExecutionContext, l: Readonly<Record<string, string>>): void {
  for (const [k, v] of Object.entries(l)) t.true(isLabelKey(k) && isLabelValue(v), `${k}=${v}`);
}

function checkIps(t: ExecutionContext, ips: readonly string[], addressesOf = "IPs"): void {
  t.true(ips.length <= 2, addressesOf);
  for (const a of ips) t.true(isIP(a) !== 0 && !a.includes("%"), a);
  if (ips.length === 2) t.not(isIP(ips[0] as string), isIP(ips[1] as string));
}

function checkNamed(t: ExecutionContext, r: { name: string; namespace: string }): void {
  t.true(isSubdomain(r.name), r.name);
  t.true(isDnsLabel(r.namespace), r.namespace);
}

const isPortNumber = (p: unknown) => Number.isInteger(p) && (p as number) >= 1 && (p as number) <= 65535;

testProp("Namespace: a valid record or a problem", [namespaceArb], (t, raw) => {
  const r: NamespaceRecord | undefined = convert(t, "Namespace", convertNamespace, raw);
  if (r) {
    t.true(isDnsLabel(r.name));
    checkLabels(t, r.labels);
  }
  t.is(({} as Record<string, unknown>).polluted, undefined);
});

testProp("Pod: a valid record or a problem", [podArb], (t, raw) => {
  const r: PodRecord | undefined = convert(t, "Pod", convertPod, raw);
  if (r) {
    checkNamed(t, r);
    checkLabels(t, r.labels);
    checkIps(t, r.ips);
    t.true(isSubdomain(r.serviceAccount));
    t.true(r.nodeName === "" || isSubdomain(r.nodeName));
    t.true(["Pending", "Running", "Succeeded", "Failed", "Unknown"].includes(r.phase));
    t.true(isSubdomain(r.workload), r.workload);
    t.true(r.netns === undefined || (r.netns.startsWith("/") && !r.netns.includes("\0")));
  }
  t.is(({} as Record<string, unknown>).polluted, undefined);
});

testProp("Service: a valid record or a problem", [serviceArb], (t, raw) => {
  const r: ServiceRecord | undefined = convert(t, "Service", convertService, raw);
  if (r) {
    checkNamed(t, r);
    checkIps(t, r.clusterIPs);
    const seen = new Set<string>();
    for (const p of r.ports) {
      t.true(isPortNumber(p.port) && ["TCP", "UDP", "SCTP"].includes(p.protocol));
      t.true(typeof p.targetPort === "string" ? /[a-z]/.test(p.targetPort) : isPortNumber(p.targetPort));
      t.false(seen.has(`${p.port}/${p.protocol}`));
      seen.add(`${p.port}/${p.protocol}`);
    }
  }
});

testProp("EndpointSlice: a valid record or a problem", [sliceArb], (t, raw) => {
  const r: EndpointSliceRecord | undefined = convert(t, "EndpointSlice", convertEndpointSlice, raw);
  if (r) {
    checkNamed(t, r);
    t.true(isDnsLabel(r.service));
    for (const e of r.endpoints) {
      t.true(e.addresses.length > 0);
      for (const a of e.addresses) {
        if (r.addressType === "FQDN") t.true(isSubdomain(a));
        else t.is(isIP(a), r.addressType === "IPv4" ? 4 : 6, a);
      }
      t.true(e.pod === undefined || /^[a-z0-9-]+\/[a-z0-9.-]+$/.test(e.pod));
    }
    for (const p of r.ports) t.true(isPortNumber(p.port));
  }
});

testProp("PeerAuthentication: a valid record or a problem", [peerAuthArb], (t, raw) => {
  const r: PeerAuthenticationRecord | undefined = convert(t, "PeerAuthentication", convertPeerAuthentication, raw);
  if (r) {
    checkNamed(t, r);
    const modes = ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];
    t.true(modes.includes(r.mtls));
    if (r.selector) checkLabels(t, r.selector);
    for (const [p, m] of Object.entries(r.portLevelMtls ?? {})) t.true(isPortNumber(Number(p)) && modes.includes(m));
  }
});

testProp("AuthorizationPolicy: a valid record or a problem; an unreadable spec tightens", [authzArb], (t, raw) => {
  const r: AuthorizationPolicyRecord | undefined = convert(t, "AuthorizationPolicy", convertAuthorizationPolicy, raw);
  if (r) {
    checkNamed(t, r);
    t.true(["ALLOW", "DENY", "AUDIT", "CUSTOM"].includes(r.action));
    if (r.selector) checkLabels(t, r.selector);
    const spec = (raw as { spec?: { action?: unknown } }).spec;
    // An action ambit does not know must never come out as ALLOW.
    if (spec?.action !== undefined && spec.action !== null && spec.action !== "ALLOW") t.not(r.action, "ALLOW");
  }
});

testProp(
  "any JSON value at all: a record or a problem, never a throw",
  [fc.oneof(junk, fc.anything({ maxDepth: 3 }))],
  (t, raw) => {
    for (const [kind, fn] of [
      ["Namespace", convertNamespace],
      ["Pod", convertPod],
      ["Service", convertService],
      ["EndpointSlice", convertEndpointSlice],
      ["PeerAuthentication", convertPeerAuthentication],
      ["AuthorizationPolicy", convertAuthorizationPolicy],
    ] as const) {
      convert(t, kind, fn as (raw: unknown) => Converted<unknown>, raw);
    }
  },
);
