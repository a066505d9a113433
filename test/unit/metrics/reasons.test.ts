import test from "ava";
import { H2Error } from "../../../agent/h2/errors.js";
import { AgentMetrics } from "../../../agent/metrics/agent-metrics.js";
import { ProxyError } from "../../../agent/proxy/errors.js";
import {
  HANDSHAKE_RESULTS,
  hboneFailureReason,
  hboneStatusReason,
  REFUSAL_REASONS,
  refusalReason,
} from "../../../agent/proxy/reasons.js";

test("an HBONE answer is 401, 403, 503 or other, whatever the destination wrote", (t) => {
  t.is(hboneStatusReason("401"), "hbone_status_401");
  t.is(hboneStatusReason("403"), "hbone_status_403");
  t.is(hboneStatusReason("503"), "hbone_status_503");
  for (const status of [undefined, "", "404", "500", "4010", " 401", "401 ", "hbone_status_401", "x".repeat(10_000)]) {
    t.is(hboneStatusReason(status), "hbone_status_other", JSON.stringify(status?.slice(0, 20)));
  }
});

test("a failed pool open is counted by the pool's own codes; any other error, whatever its code, as hbone_error", (t) => {
  t.is(hboneFailureReason(new ProxyError("hbone_connect_failed", "x")), "hbone_connect_failed");
  t.is(hboneFailureReason(new ProxyError("hbone_identity_mismatch", "x")), "hbone_identity_mismatch");
  t.is(hboneFailureReason(new ProxyError("no_identity", "x")), "no_identity");
  t.is(hboneFailureReason(new ProxyError("hbone_made_up_by_a_peer", "x")), "hbone_error");
  t.is(hboneFailureReason(Object.assign(new Error("x"), { code: "anything" })), "hbone_error");
  t.is(hboneFailureReason(new H2Error(1, "protocol error")), "hbone_error");
  t.is(hboneFailureReason("a string"), "hbone_error");
});

test("the closed sets hold each value once, all in the label charset", (t) => {
  for (const list of [REFUSAL_REASONS, HANDSHAKE_RESULTS]) {
    t.is(new Set(list).size, list.length);
    for (const v of list) t.regex(v, /^[a-z0-9_]+$/);
  }
  t.is(refusalReason("plaintext_strict"), "plaintext_strict");
});

test("10,000 distinct refusal reasons and handshake results reaching the metrics make one series each: other", async (t) => {
  const m = new AgentMetrics({ defaultMetrics: false });
  t.teardown(() => m.close());
  for (let i = 0; i < 10_000; i++) {
    // What a worker could post if a reason escaped the compiler's watch (events cross threads as plain strings).
    m.connectionRefused("shop/web-1", "outbound", `hbone_status_${20_000 + i}`);
    m.handshake("server", `result_${i}`, 0.001);
  }
  m.connectionRefused("shop/web-1", "outbound", "hbone_status_401");
  const refused = (await m.registry.getSingleMetric("ambit_connections_refused_total")?.get())?.values ?? [];
  t.deepEqual(
    refused.map((v) => [v.labels.reason, v.value]),
    [
      ["other", 10_000],
      ["hbone_status_401", 1],
    ],
  );
  const handshakes = (await m.registry.getSingleMetric("ambit_tls_handshakes_total")?.get())?.values ?? [];
  t.deepEqual(
    handshakes.map((v) => [v.labels.result, v.value]),
    [["other", 10_000]],
  );
});
