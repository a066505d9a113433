import test from "ava";
import { parseAllDocuments } from "yaml";
import { clusterStateOf } from "../../../agent/kube/cluster-state.js";
import { convertPeerAuthentication } from "../../../agent/kube/convert-istio.js";
import { type PolicyTarget, peerAuthenticationResolver } from "../../../agent/kube/peer-authentication.js";
import { objectKey, type PeerAuthenticationRecord } from "../../../agent/kube/records.js";

// Exactly as written in the task: applied in order, the second replaces the first (same name).
const MANIFESTS = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: production}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: production}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: legacy-exception, namespace: production}
spec: {selector: {matchLabels: {app: legacy-service}}, mtls: {mode: DISABLE}}
`;

const LEGACY: PolicyTarget[] = [
  { namespace: "production", labels: { app: "legacy-service" } },
  { namespace: "production", labels: { app: "legacy-service", version: "v2", "pod-template-hash": "5f6d7c8b9" } },
];
const OTHERS: PolicyTarget[] = [
  { namespace: "production", labels: {} },
  { namespace: "production", labels: { app: "web" } },
  { namespace: "production", labels: { app: "legacy-service-v2" } },
  { namespace: "production", labels: { service: "legacy-service" } },
];
const PORTS = [80, 443, 8080, 15008, 65535];

function modes(policies: Iterable<PeerAuthenticationRecord>, pods: PolicyTarget[]): Set<string> {
  const resolver = peerAuthenticationResolver(clusterStateOf({ peerAuthentications: [...policies] }));
  return new Set(pods.flatMap((pod) => PORTS.map((port) => resolver.mode(pod, port))));
}

test("the three production manifests, applied in order: PERMISSIVE, then STRICT, then DISABLE for legacy-service only", (t) => {
  // kubectl reads manifests as YAML 1.1.
  const documents = parseAllDocuments(MANIFESTS, { version: "1.1" });
  t.is(documents.length, 3);
  const records = documents.map((doc) => {
    t.deepEqual(doc.errors, []);
    const converted = convertPeerAuthentication(doc.toJS());
    if ("problem" in converted) throw new Error(converted.problem);
    return converted.record;
  });

  const applied = new Map<string, PeerAuthenticationRecord>();
  const apply = (r: PeerAuthenticationRecord) => applied.set(objectKey(r), r);

  apply(records[0] as PeerAuthenticationRecord);
  t.deepEqual(modes(applied.values(), [...LEGACY, ...OTHERS]), new Set(["PERMISSIVE"]));

  apply(records[1] as PeerAuthenticationRecord);
  t.is(applied.size, 1, "the second manifest replaces the first");
  t.deepEqual(modes(applied.values(), [...LEGACY, ...OTHERS]), new Set(["STRICT"]));

  apply(records[2] as PeerAuthenticationRecord);
  t.deepEqual(modes(applied.values(), LEGACY), new Set(["DISABLE"]));
  t.deepEqual(modes(applied.values(), OTHERS), new Set(["STRICT"]));
  // What decided, for the logs.
  const resolver = peerAuthenticationResolver(clusterStateOf({ peerAuthentications: [...applied.values()] }));
  t.like(resolver.explain(LEGACY[0] as PolicyTarget, 8080), {
    level: "workload",
    policy: "production/legacy-exception",
  });
  t.like(resolver.explain(OTHERS[1] as PolicyTarget, 8080), { level: "namespace", policy: "production/default" });
  // Other namespaces were never touched.
  t.deepEqual(
    modes(applied.values(), [{ namespace: "staging", labels: { app: "legacy-service" } }]),
    new Set(["PERMISSIVE"]),
  );
});
