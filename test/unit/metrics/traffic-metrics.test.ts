import test from "ava";
import type { PodRecord } from "../../../agent/kube/records.js";
import { AgentMetrics } from "../../../agent/metrics/agent-metrics.js";
import { principalLabel, trafficLabels } from "../../../agent/metrics/labels.js";
import type { ConnectionInfo } from "../../../agent/proxy/observer.js";
import { podRecord } from "../../support/records.js";

const A = "spiffe://cluster.local/ns/shop/sa/front";
const B = "spiffe://cluster.local/ns/shop/sa/cart";

function conn(id: number, over: Partial<ConnectionInfo> = {}): ConnectionInfo {
  return {
    id,
    reporter: "source",
    source: { workload: "front", namespace: "shop", principal: A, ip: "10.1.1.2" },
    destination: { workload: "cart", namespace: "shop", principal: B, ip: "10.1.2.2", port: 8080 },
    tls: true,
    pod: "shop/front-1",
    startedAt: Date.now(),
    ...over,
  };
}

function pod(name: string, workload: string): PodRecord {
  return podRecord({ name, serviceAccount: workload, workload });
}

function metricsFor(t: { teardown(fn: () => void): void }) {
  const m = new AgentMetrics({ defaultMetrics: false });
  t.teardown(() => m.close());
  return m;
}

async function values(m: AgentMetrics, name: string) {
  const metric = m.registry.getSingleMetric(name);
  return metric ? (await metric.get()).values : [];
}

test("Istio labels: principals as Istio writes them, security policy from tls", (t) => {
  t.deepEqual(trafficLabels(conn(1)), {
    reporter: "source",
    source_workload: "front",
    source_workload_namespace: "shop",
    source_principal: A,
    destination_workload: "cart",
    destination_workload_namespace: "shop",
    destination_principal: B,
    connection_security_policy: "mutual_tls",
    response_flags: "-",
  });
  t.is(trafficLabels(conn(1), "DENY").response_flags, "DENY");
  const plain = trafficLabels(
    conn(2, {
      tls: false,
      source: { workload: "", namespace: "", principal: "", ip: "1.2.3.4" },
      reporter: "destination",
    }),
  );
  t.is(plain.source_principal, "unknown");
  t.is(plain.source_workload, "unknown");
  t.is(plain.connection_security_policy, "none");
  t.is(principalLabel(""), "unknown");
  t.is(principalLabel(A), A);
});

test("bytes follow Istio's direction: sent is the response, received the request", async (t) => {
  const m = metricsFor(t);
  const c = conn(1);
  m.connectionOpened(c);
  m.connectionClosed(c, { sent: 100, received: 7000, durationMs: 5 });
  t.is((await values(m, "istio_tcp_sent_bytes_total"))[0]?.value, 7000);
  t.is((await values(m, "istio_tcp_received_bytes_total"))[0]?.value, 100);
  t.is((await values(m, "istio_tcp_connections_opened_total"))[0]?.value, 1);
  t.is((await values(m, "istio_tcp_connections_closed_total"))[0]?.value, 1);
});

test("cardinality: 10k connections from many ports and IPs make one series per workload pair", async (t) => {
  const m = metricsFor(t);
  for (let i = 0; i < 10_000; i += 1) {
    const c = conn(i, {
      source: { workload: "front", namespace: "shop", principal: A, ip: `10.1.${i % 250}.${i % 200}` },
      destination: {
        workload: i % 2 ? "cart" : "pay",
        namespace: "shop",
        principal: B,
        ip: `10.2.${i % 97}.3`,
        port: 1024 + (i % 50_000),
      },
    });
    m.connectionOpened(c);
    m.connectionClosed(c, { sent: 1, received: 2, durationMs: 1 });
    m.connectionRefused("shop/front-1", "outbound", "no_identity");
  }
  t.is(m.trafficSeries, 2);
  t.is((await values(m, "istio_tcp_connections_opened_total")).length, 2);
  t.is((await values(m, "istio_tcp_sent_bytes_total")).length, 2);
  t.is((await values(m, "ambit_connections_refused_total")).length, 1);
  const text = await m.registry.metrics();
  t.false(text.includes("10.1."), "no IP in any label");
});

test("a denial counts as opened and closed with response_flags DENY, and per policy; its series leave with the workload", async (t) => {
  const m = metricsFor(t);
  m.enrolled(pod("cart-1", "cart"), 0.1);
  const inbound = conn(1, { reporter: "destination", pod: "shop/cart-1" });
  m.connectionOpened(inbound);
  m.connectionClosed(inbound, { sent: 5, received: 5, durationMs: 1 });
  for (let i = 0; i < 3; i++)
    m.connectionDenied(conn(2 + i, { reporter: "destination" }), {
      policy: "shop/deny-front",
      reason: "deny_matched",
      rule: 0,
    });
  m.connectionDenied(conn(9, { reporter: "destination" }), { policy: "allow_unmatched", reason: "allow_unmatched" });
  const opened = await values(m, "istio_tcp_connections_opened_total");
  t.deepEqual(opened.map((v) => [v.labels.response_flags, v.value]).sort(), [
    ["-", 1],
    ["DENY", 4],
  ]);
  const closed = await values(m, "istio_tcp_connections_closed_total");
  t.deepEqual(closed.map((v) => [v.labels.response_flags, v.value]).sort(), [
    ["-", 1],
    ["DENY", 4],
  ]);
  const denials = await values(m, "ambit_policy_denials_total");
  t.deepEqual(
    denials.map((v) => [v.labels, v.value]),
    [
      [{ namespace: "shop", workload: "cart", policy: "shop/deny-front" }, 3],
      [{ namespace: "shop", workload: "cart", policy: "allow_unmatched" }, 1],
    ],
  );
  m.unenrolled(pod("cart-1", "cart"));
  t.is((await values(m, "ambit_policy_denials_total")).length, 0);
  t.is((await values(m, "istio_tcp_connections_opened_total")).length, 0);
});

test("a workload's series leave with its last pod on the node, not with each replica", async (t) => {
  const m = metricsFor(t);
  m.enrolled(pod("front-1", "front"), 0.1);
  m.enrolled(pod("front-2", "front"), 0.1);
  m.enrolled(pod("other-1", "other"), 0.1);
  const toCart = conn(1);
  const other = conn(2, {
    source: { workload: "other", namespace: "shop", principal: A, ip: "10.1.1.9" },
    pod: "shop/other-1",
  });
  for (const c of [toCart, other]) {
    m.connectionOpened(c);
    m.connectionClosed(c, { sent: 1, received: 1, durationMs: 1 });
  }
  m.connectionRefused("shop/front-1", "inbound", "plaintext_strict");
  t.is((await values(m, "ambit_pods_enrolled"))[0]?.value, 3);

  m.unenrolled(pod("front-1", "front"));
  t.is((await values(m, "istio_tcp_sent_bytes_total")).length, 2, "front-2 still serves the workload");
  t.is((await values(m, "ambit_connections_refused_total")).length, 0, "the pod's refusal series went with it");

  m.unenrolled(pod("front-2", "front"));
  const left = await values(m, "istio_tcp_sent_bytes_total");
  t.deepEqual(
    left.map((v) => v.labels.source_workload),
    ["other"],
  );
  t.is((await values(m, "istio_tcp_connections_opened_total")).length, 1);
  t.is((await values(m, "ambit_pods_enrolled"))[0]?.value, 1);
  t.is(m.trafficSeries, 1);
});

test("handshakes: counted by role and result, only successful ones timed", async (t) => {
  const m = metricsFor(t);
  m.handshake("client", "ok", 0.0004);
  m.handshake("server", "ok", 0.002);
  m.handshake("server", "bad_certificate", 0.001);
  const counts = await values(m, "ambit_tls_handshakes_total");
  t.is(counts.length, 3);
  const hist = (await values(m, "ambit_tls_handshake_duration_seconds")) as Array<{
    metricName?: string;
    labels: Record<string, string | number>;
    value: number;
  }>;
  const count = hist.filter((v) => v.metricName === "ambit_tls_handshake_duration_seconds_count");
  t.deepEqual(count.map((v) => v.value).sort(), [1, 1]);
  const buckets = hist.filter((v) => v.metricName?.endsWith("_bucket")).map((v) => Number(v.labels.le));
  t.true(buckets.includes(0.00005), "smallest bucket 50 us");
  t.true(Math.max(...buckets.filter(Number.isFinite)) >= 1, "largest bucket covers 1 s");
});
