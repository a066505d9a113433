import test from "ava";
import type { Converted } from "../../../agent/kube/convert-common.js";
import { convertEndpointSlice } from "../../../agent/kube/convert-discovery.js";

/** An EndpointSlice as the API server serves it (trimmed). */
const apiSlice = (): Record<string, unknown> => ({
  apiVersion: "discovery.k8s.io/v1",
  kind: "EndpointSlice",
  metadata: {
    name: "web-abc12",
    namespace: "shop",
    labels: {
      "kubernetes.io/service-name": "web",
      "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    },
  },
  addressType: "IPv4",
  endpoints: [
    {
      addresses: ["10.244.1.7"],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: "node-a",
      targetRef: { kind: "Pod", name: "web-1", namespace: "shop", uid: "u1" },
    },
    { addresses: ["10.244.2.9"], conditions: { ready: false }, targetRef: { kind: "Pod", name: "web-2" } },
    { addresses: ["10.244.3.3"], targetRef: { kind: "Node", name: "node-c" } },
  ],
  ports: [{ name: "http", port: 8080, protocol: "TCP" }, { port: 9100 }],
});

function record<T>(result: Converted<T>): T {
  if ("problem" in result) throw new Error(`unexpected problem: ${result.problem}`);
  return result.record;
}

function problem<T>(result: Converted<T>): string {
  if (!("problem" in result)) throw new Error(`expected a problem, got ${JSON.stringify(result.record)}`);
  return result.problem;
}

const patched = (patch: (s: Record<string, unknown>) => void) => {
  const s = apiSlice();
  patch(s);
  return s;
};

test("an EndpointSlice from the API server: service, endpoints, ports with defaults", (t) => {
  t.deepEqual(record(convertEndpointSlice(apiSlice())), {
    name: "web-abc12",
    namespace: "shop",
    service: "web",
    addressType: "IPv4",
    endpoints: [
      { addresses: ["10.244.1.7"], ready: true, nodeName: "node-a", pod: "shop/web-1" },
      // No namespace on the targetRef: the slice's own.
      { addresses: ["10.244.2.9"], ready: false, pod: "shop/web-2" },
      // No conditions.ready: ready, as the API defines it; a targetRef that is no Pod names no pod.
      { addresses: ["10.244.3.3"], ready: true },
    ],
    ports: [
      { name: "http", port: 8080, protocol: "TCP" },
      { name: "", port: 9100, protocol: "TCP" },
    ],
  });
});

test("a slice without endpoints or ports, and a port without a number, are kept empty", (t) => {
  const s = record(
    convertEndpointSlice(
      patched((s) => {
        s.endpoints = null;
        s.ports = [{ name: "", port: null, protocol: "TCP" }];
      }),
    ),
  );
  t.deepEqual([s.endpoints, s.ports], [[], []]);
});

test("IPv6 and FQDN slices check their addresses by type", (t) => {
  const v6 = patched((s) => {
    s.addressType = "IPv6";
    s.endpoints = [{ addresses: ["fd00:10:244:1::7"] }];
  });
  t.deepEqual(record(convertEndpointSlice(v6)).endpoints, [{ addresses: ["fd00:10:244:1::7"], ready: true }]);
  const fqdn = patched((s) => {
    s.addressType = "FQDN";
    s.endpoints = [{ addresses: ["db.example.com"] }];
  });
  t.is(record(convertEndpointSlice(fqdn)).addressType, "FQDN");
  const mixed = patched((s) => {
    s.addressType = "IPv6";
  });
  t.regex(
    problem(convertEndpointSlice(mixed)),
    /^EndpointSlice shop\/web-abc12: endpoints\[0\].addresses has 1 that are not IPv6/,
  );
});

test("bad slices are problems naming the slice and the fault", (t) => {
  const cases: [(s: Record<string, unknown>) => void, RegExp][] = [
    [
      (s) => ((s.metadata as Record<string, unknown>).labels = {}),
      /label kubernetes.io\/service-name must name a Service/,
    ],
    [(s) => delete s.addressType, /addressType is missing/],
    [(s) => (s.addressType = "IPv5"), /unknown addressType "IPv5"/],
    [(s) => (s.endpoints = [{ addresses: [] }]), /endpoints\[0\].addresses must list at least one address/],
    [(s) => (s.endpoints = [{ addresses: "10.0.0.1" }]), /endpoints\[0\].addresses must be an array/],
    [(s) => (s.endpoints = [{ addresses: ["10.0.0.1"], conditions: { ready: "yes" } }]), /ready must be a boolean/],
    [(s) => (s.endpoints = [{ addresses: ["10.0.0.1"], targetRef: { kind: "Pod" } }]), /targetRef names no valid pod/],
    [
      (s) => (s.endpoints = Array.from({ length: 1001 }, () => ({ addresses: ["10.0.0.1"] }))),
      /1001 entries \(at most 1000\)/,
    ],
    [(s) => (s.endpoints = [{ addresses: Array(101).fill("10.0.0.1") }]), /101 entries \(at most 100\)/],
    [(s) => (s.ports = [{ port: 0 }]), /ports\[0\].port must be a port number/],
    [(s) => (s.ports = [{ port: 80, protocol: "ICMP" }]), /unknown ports\[0\].protocol "ICMP"/],
    [(s) => (s.ports = [{ port: 80, name: 5 }]), /ports\[0\].name must be a DNS-1123 label/],
    [(s) => (s.kind = "Endpoints"), /kind is "Endpoints"/],
    [(s) => (s.apiVersion = "discovery.k8s.io/v1beta1"), /unsupported apiVersion/],
  ];
  for (const [patch, expected] of cases) t.regex(problem(convertEndpointSlice(patched(patch))), expected);
});
