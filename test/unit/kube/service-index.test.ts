import test from "ava";
import { clusterStateOf } from "../../../agent/kube/cluster-state.js";
import type { EndpointRecord, EndpointSliceRecord, ServiceRecord } from "../../../agent/kube/records.js";
import { type PickedEndpoint, ServiceIndex, type ServiceTarget } from "../../../agent/kube/service-index.js";

const service = (
  name: string,
  clusterIPs: string[],
  ports: ServiceRecord["ports"],
  namespace = "shop",
): ServiceRecord => ({
  name,
  namespace,
  clusterIPs,
  ports,
});

const slice = (
  name: string,
  serviceName: string,
  addressType: EndpointSliceRecord["addressType"],
  endpoints: EndpointRecord[],
  ports: EndpointSliceRecord["ports"],
  namespace = "shop",
): EndpointSliceRecord => ({ name, namespace, service: serviceName, addressType, endpoints, ports });

const ready = (ip: string, pod?: string): EndpointRecord => ({ addresses: [ip], ready: true, ...(pod ? { pod } : {}) });
const notReady = (ip: string): EndpointRecord => ({ addresses: [ip], ready: false });

const WEB = service(
  "web",
  ["10.96.0.10", "fd00:96::a"],
  [
    { name: "http", port: 80, protocol: "TCP", targetPort: "http" },
    { name: "dns", port: 53, protocol: "UDP", targetPort: 5353 },
  ],
);
const WEB_V4 = slice(
  "web-v4",
  "web",
  "IPv4",
  [ready("10.244.1.2", "shop/web-1"), ready("10.244.1.3"), notReady("10.244.1.4")],
  [
    { name: "http", port: 8080, protocol: "TCP" },
    { name: "dns", port: 5353, protocol: "UDP" },
  ],
);
const WEB_V6 = slice("web-v6", "web", "IPv6", [ready("fd00:244::2")], [{ name: "http", port: 8080, protocol: "TCP" }]);

function endpoint(index: ServiceIndex, target: ServiceTarget | undefined): PickedEndpoint {
  if (!target) throw new Error("no target");
  const result = index.pick(target);
  if ("reason" in result) throw new Error(result.reason);
  return result.endpoint;
}

/** The distinct values, sorted (ava compares Sets in insertion order). */
const distinct = (xs: string[]) => [...new Set(xs)].sort();

/** `count` picks, as "ip:port" strings. */
function picks(index: ServiceIndex, target: ServiceTarget | undefined, count: number): string[] {
  return Array.from({ length: count }, () => {
    const e = endpoint(index, target);
    return `${e.ip}:${e.port}`;
  });
}

test("lookup: a ClusterIP and port in any textual form give the Service and its port", (t) => {
  const index = new ServiceIndex([WEB], [WEB_V4, WEB_V6]);
  t.is(index.size, 4);
  const v4 = index.lookup("10.96.0.10", 80);
  t.is(v4?.service, WEB);
  t.deepEqual(v4?.port, WEB.ports[0]);
  t.like(v4, { clusterIp: "10.96.0.10", family: 4 });
  t.is(index.lookup("::ffff:10.96.0.10", 80)?.service, WEB, "IPv4-mapped IPv6 is the IPv4 address");
  for (const form of ["fd00:96::a", "FD00:96:0:0:0:0:0:A", "fd00:0096::000a", "fd00:96:0::a"]) {
    t.like(index.lookup(form, 80), { family: 6, port: WEB.ports[0] }, form);
  }
  t.is(index.lookup("10.96.0.10", 53, "UDP")?.port.name, "dns");
  t.is(index.lookup("10.96.0.10", 53), undefined, "TCP 53 is not a port of the Service");
  t.is(index.lookup("10.96.0.10", 81), undefined);
  t.is(index.lookup("10.96.0.11", 80), undefined);
  t.is(index.lookup("not an ip", 80), undefined);
});

test("headless and ExternalName Services (no ClusterIP) are never in the index", (t) => {
  const headless = service("db", [], [{ name: "pg", port: 5432, protocol: "TCP", targetPort: 5432 }]);
  const index = new ServiceIndex(
    [headless],
    [slice("db-1", "db", "IPv4", [ready("10.244.9.9")], [{ name: "pg", port: 5432, protocol: "TCP" }])],
  );
  t.is(index.size, 0);
  t.is(index.lookup("10.244.9.9", 5432), undefined);
});

test("pick: the endpoint's target port by port name, ready endpoints of the ClusterIP's family only", (t) => {
  const index = new ServiceIndex([WEB], [WEB_V4, WEB_V6]);
  const v4 = index.lookup("10.96.0.10", 80);
  t.deepEqual(distinct(picks(index, v4, 6)), ["10.244.1.2:8080", "10.244.1.3:8080"]);
  t.deepEqual(picks(index, index.lookup("fd00:96::a", 80), 3), [
    "fd00:244::2:8080",
    "fd00:244::2:8080",
    "fd00:244::2:8080",
  ]);
  t.deepEqual(distinct(picks(index, index.lookup("10.96.0.10", 53, "UDP"), 4)), ["10.244.1.2:5353", "10.244.1.3:5353"]);
  // The pod behind an endpoint comes along when the slice names it.
  const all = Array.from({ length: 2 }, () => endpoint(index, v4));
  t.deepEqual(
    all.find((e) => e.ip === "10.244.1.2"),
    { ip: "10.244.1.2", port: 8080, pod: "shop/web-1" },
  );
  // The IPv6 ClusterIP's UDP port has no IPv6 slice port: nothing to dial.
  t.deepEqual(index.pick(index.lookup("fd00:96::a", 53, "UDP") as ServiceTarget), { reason: "no_ready_endpoint" });
});

test('a Service with one unnamed port matches the slice port named ""', (t) => {
  const svc = service("plain", ["10.96.0.20"], [{ name: "", port: 80, protocol: "TCP", targetPort: 9376 }]);
  const s = slice("plain-1", "plain", "IPv4", [ready("10.244.2.1")], [{ name: "", port: 9376, protocol: "TCP" }]);
  const index = new ServiceIndex([svc], [s]);
  t.deepEqual(endpoint(index, index.lookup("10.96.0.20", 80)), { ip: "10.244.2.1", port: 9376 });
  // A slice whose only port has another name does not serve it.
  const other = new ServiceIndex([svc], [{ ...s, ports: [{ name: "http", port: 9376, protocol: "TCP" }] }]);
  t.deepEqual(other.pick(other.lookup("10.96.0.20", 80) as ServiceTarget), { reason: "no_ready_endpoint" });
});

test("an endpoint's family is its address's: an IPv4-mapped address in an IPv6 slice serves neither family", (t) => {
  const svc = service("f", ["10.96.0.80", "fd00:96::80"], [{ name: "", port: 80, protocol: "TCP", targetPort: 80 }]);
  const port = [{ name: "", port: 80, protocol: "TCP" }];
  const index = new ServiceIndex(
    [svc],
    [
      slice("f-4", "f", "IPv4", [ready("10.244.8.1")], port),
      slice("f-6", "f", "IPv6", [ready("::ffff:10.244.8.2"), ready("fd00::8:3")], port),
    ],
  );
  t.deepEqual(distinct(picks(index, index.lookup("10.96.0.80", 80), 4)), ["10.244.8.1:80"]);
  t.deepEqual(distinct(picks(index, index.lookup("fd00:96::80", 80), 4)), ["fd00::8:3:80"]);
});

test("no_ready_endpoint: no slices, none ready, or only the other family", (t) => {
  const svc = service("s", ["10.96.0.30"], [{ name: "http", port: 80, protocol: "TCP", targetPort: 80 }]);
  const port = [{ name: "http", port: 80, protocol: "TCP" }];
  const cases: EndpointSliceRecord[][] = [
    [],
    [slice("s-1", "s", "IPv4", [notReady("10.244.0.1"), notReady("10.244.0.2")], port)],
    [slice("s-1", "s", "IPv6", [ready("fd00::1")], port)],
    [slice("s-1", "s", "IPv4", [], port)],
    // Another namespace's Service of the same name.
    [slice("s-1", "s", "IPv4", [ready("10.244.0.1")], port, "elsewhere")],
  ];
  for (const slices of cases) {
    const index = new ServiceIndex([svc], slices);
    t.deepEqual(index.pick(index.lookup("10.96.0.30", 80) as ServiceTarget), { reason: "no_ready_endpoint" });
  }
});

test("slices of one Service are merged; an address in several slices counts once, ready if any copy is", (t) => {
  const svc = service("m", ["10.96.0.40"], [{ name: "http", port: 80, protocol: "TCP", targetPort: "web" }]);
  const port = (n: number) => [{ name: "http", port: n, protocol: "TCP" }];
  const slices = [
    slice("m-a", "m", "IPv4", [ready("10.244.0.1"), notReady("10.244.0.2"), ready("10.244.0.3")], port(8080)),
    slice("m-b", "m", "IPv4", [ready("10.244.0.2"), notReady("10.244.0.3"), ready("10.244.0.4")], port(8080)),
    // The named target port resolved to another number on these pods: a different endpoint.
    slice("m-c", "m", "IPv4", [ready("10.244.0.1")], port(9090)),
  ];
  const index = new ServiceIndex([svc], slices);
  const seen = picks(index, index.lookup("10.96.0.40", 80), 5 * 3);
  const counts = new Map<string, number>();
  for (const s of seen) counts.set(s, (counts.get(s) ?? 0) + 1);
  t.deepEqual([...counts.keys()].sort(), [
    "10.244.0.1:8080",
    "10.244.0.1:9090",
    "10.244.0.2:8080",
    "10.244.0.3:8080",
    "10.244.0.4:8080",
  ]);
  t.deepEqual([...counts.values()], [3, 3, 3, 3, 3], "each endpoint exactly as often");
});

test("round-robin: a stable cyclic order whatever the slice order, each endpoint in turn", (t) => {
  const svc = service("rr", ["10.96.0.50"], [{ name: "http", port: 80, protocol: "TCP", targetPort: 8080 }]);
  const ips = Array.from({ length: 7 }, (_, i) => `10.244.3.${i + 1}`);
  const port = [{ name: "http", port: 8080, protocol: "TCP" }];
  const slicesA = [
    slice(
      "rr-a",
      "rr",
      "IPv4",
      ips.slice(0, 4).map((ip) => ready(ip)),
      port,
    ),
    slice(
      "rr-b",
      "rr",
      "IPv4",
      ips.slice(4).map((ip) => ready(ip)),
      port,
    ),
  ];
  const slicesB = [
    slice(
      "rr-b",
      "rr",
      "IPv4",
      [...ips.slice(4)].reverse().map((ip) => ready(ip)),
      port,
    ),
    slice(
      "rr-a",
      "rr",
      "IPv4",
      [...ips.slice(0, 4)].reverse().map((ip) => ready(ip)),
      port,
    ),
  ];
  const cycles: string[] = [];
  for (const slices of [slicesA, slicesB, slicesA, slicesB]) {
    const index = new ServiceIndex([svc], slices);
    const seq = picks(index, index.lookup("10.96.0.50", 80), 14);
    t.deepEqual(seq.slice(0, 7), seq.slice(7), "period 7");
    t.is(new Set(seq).size, 7, "every endpoint within one period");
    // Normalise the rotation (a fresh index starts at a random endpoint) to compare orders.
    const start = seq.indexOf("10.244.3.1:8080");
    cycles.push([...seq.slice(start, 7), ...seq.slice(0, start)].join(" "));
  }
  t.is(new Set(cycles).size, 1, "one order, whatever the slice order");
});

test("the rotation is per Service port: two ports of one Service, and two families, turn independently", (t) => {
  const svc = service(
    "two",
    ["10.96.0.60", "fd00:96::60"],
    [
      { name: "a", port: 80, protocol: "TCP", targetPort: 8080 },
      { name: "b", port: 81, protocol: "TCP", targetPort: 8081 },
    ],
  );
  const ports = [
    { name: "a", port: 8080, protocol: "TCP" },
    { name: "b", port: 8081, protocol: "TCP" },
  ];
  const index = new ServiceIndex(
    [svc],
    [
      slice("two-4", "two", "IPv4", [ready("10.244.4.1"), ready("10.244.4.2")], ports),
      slice("two-6", "two", "IPv6", [ready("fd00::41"), ready("fd00::42")], ports),
    ],
  );
  const a = index.lookup("10.96.0.60", 80);
  const b = index.lookup("10.96.0.60", 81);
  const first = endpoint(index, a).ip;
  // Picks on b and on the IPv6 ClusterIP do not advance a's rotation.
  picks(index, b, 3);
  picks(index, index.lookup("fd00:96::60", 80), 3);
  t.not(endpoint(index, a).ip, first);
});

test("a target from an earlier index is answered with this index's endpoints", (t) => {
  const old = new ServiceIndex([WEB], [WEB_V4]);
  const target = old.lookup("10.96.0.10", 80) as ServiceTarget;
  const scaled = { ...WEB_V4, endpoints: [ready("10.244.1.9")] };
  const next = new ServiceIndex([WEB], [scaled]);
  t.deepEqual(endpoint(next, target), { ip: "10.244.1.9", port: 8080 });
  t.deepEqual(new ServiceIndex([], []).pick(target), { reason: "no_ready_endpoint" }, "the Service is gone");
});

test("two Services claiming one ClusterIP:port: the first by namespace/name, whatever the order", (t) => {
  const a = service("a", ["10.96.0.70"], [{ name: "", port: 80, protocol: "TCP", targetPort: 80 }]);
  const b = service("b", ["10.96.0.70"], [{ name: "", port: 80, protocol: "TCP", targetPort: 80 }]);
  t.is(new ServiceIndex([a, b], []).lookup("10.96.0.70", 80)?.service, a);
  t.is(new ServiceIndex([b, a], []).lookup("10.96.0.70", 80)?.service, a);
});

test("2,000 dual-stack Services: every ClusterIP and port found, each picking its own endpoints", (t) => {
  const N = 2000;
  const services: ServiceRecord[] = [];
  const slices: EndpointSliceRecord[] = [];
  for (let i = 0; i < N; i++) {
    const ns = `ns-${i % 50}`;
    const name = `svc-${i}`;
    const hi = i >> 8;
    const lo = i & 0xff;
    services.push(
      service(
        name,
        [`10.96.${hi}.${lo}`, `fd00:96::${i.toString(16)}`],
        [
          { name: "http", port: 80, protocol: "TCP", targetPort: "http" },
          { name: "grpc", port: 9000, protocol: "TCP", targetPort: 9000 },
        ],
        ns,
      ),
    );
    const ports = [
      { name: "http", port: 8000 + (i % 100), protocol: "TCP" },
      { name: "grpc", port: 9000, protocol: "TCP" },
    ];
    // Three ready pods, one not ready, split over two slices; IPv6 twins in a third.
    const pods = [0, 1, 2, 3].map((k) => `10.${100 + k}.${hi}.${lo}`);
    slices.push(slice(`${name}-a`, name, "IPv4", [ready(pods[0] as string), notReady(pods[3] as string)], ports, ns));
    slices.push(slice(`${name}-b`, name, "IPv4", [ready(pods[1] as string), ready(pods[2] as string)], ports, ns));
    slices.push(slice(`${name}-c`, name, "IPv6", [ready(`fd00:100::${i.toString(16)}`)], ports, ns));
  }
  const index = ServiceIndex.of(clusterStateOf({ services, endpointSlices: slices }));
  t.is(index.size, N * 2 * 2);
  for (let i = 0; i < N; i++) {
    const hi = i >> 8;
    const lo = i & 0xff;
    const target = index.lookup(`10.96.${hi}.${lo}`, 80);
    if (target?.service.name !== `svc-${i}`) {
      t.fail(`10.96.${hi}.${lo}:80 gave ${target?.service.name}`);
      return;
    }
    const got = new Set(picks(index, target, 3));
    const want = new Set([0, 1, 2].map((k) => `10.${100 + k}.${hi}.${lo}:${8000 + (i % 100)}`));
    if ([...got].some((e) => !want.has(e)) || got.size !== 3) {
      t.fail(`svc-${i}: ${[...got]}`);
      return;
    }
    const v6 = index.lookup(`fd00:96:0:0:0:0:0:${i.toString(16)}`, 9000);
    if (v6?.service.name !== `svc-${i}` || endpoint(index, v6).ip !== `fd00:100::${i.toString(16)}`) {
      t.fail(`svc-${i} over IPv6`);
      return;
    }
  }
  t.pass();
});
