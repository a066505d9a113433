import test from "ava";
import pino from "pino";
import {
  EVENT_BATCH_MAX,
  EVENT_FLUSH_MS,
  replayEvents,
  WorkerEventBatch,
} from "../../../agent/dataplane/event-batch.js";
import type { WorkerEvents } from "../../../agent/dataplane/worker-protocol.js";
import type { ConnectionInfo, ProxyObserver } from "../../../agent/proxy/observer.js";

const info = (id: number): ConnectionInfo => ({
  id,
  reporter: "source",
  source: { workload: "a", namespace: "shop", principal: "spiffe://cluster.local/ns/shop/sa/a", ip: "10.0.0.1" },
  destination: { workload: "b", namespace: "shop", principal: "", ip: "10.0.0.2", port: 80 },
  tls: true,
  pod: "shop/a",
  startedAt: 1,
});

function recordingObserver() {
  const seen: string[] = [];
  const observer: ProxyObserver = {
    handshake: (role, result) => seen.push(`handshake ${role} ${result}`),
    connectionOpened: (i) => seen.push(`opened ${i.id}`),
    connectionClosed: (i, end) => seen.push(`closed ${i.id} ${end.sent}/${end.received}`),
    connectionRefused: (pod, direction, reason) => seen.push(`refused ${pod} ${direction} ${reason}`),
    connectionDenied: (i, d) => seen.push(`denied ${i.id} ${d.policy}`),
  };
  return { seen, observer };
}

test("events of many connections travel in one message, in order, within the flush interval", async (t) => {
  const posted: WorkerEvents[] = [];
  const batch = new WorkerEventBatch((m) => posted.push(structuredClone(m)));
  for (let id = 1; id <= 100; id++) {
    batch.connectionOpened(info(id));
    batch.connectionClosed(info(id), { sent: id, received: 2 * id, durationMs: 1 });
  }
  batch.handshake("client", "identity_mismatch", 0.002);
  batch.connectionDenied(info(101), { policy: "shop/deny-all", reason: "deny_matched", rule: 0 });
  t.is(posted.length, 0, "nothing is posted per connection");
  await new Promise((r) => setTimeout(r, EVENT_FLUSH_MS * 3));
  t.is(posted.length, 1);
  const { seen, observer } = recordingObserver();
  for (const m of posted) replayEvents(m.events, observer, pino({ level: "silent" }));
  t.is(seen.length, 202);
  t.deepEqual(seen.slice(0, 3), ["opened 1", "closed 1 1/2", "opened 2"]);
  t.is(seen[200], "handshake client identity_mismatch");
  t.is(seen[201], "denied 101 shop/deny-all");
});

test("a full batch goes at once, without waiting for the interval", (t) => {
  const posted: WorkerEvents[] = [];
  const batch = new WorkerEventBatch((m) => posted.push(m));
  for (let i = 0; i < EVENT_BATCH_MAX; i++) batch.connectionRefused("shop/a", "inbound", "plaintext_strict");
  t.is(posted.length, 1);
  t.is(posted[0]?.events.length, EVENT_BATCH_MAX);
  batch.flush();
  t.is(posted.length, 1, "an empty queue posts nothing");
});

test("a worker's log lines reach the main thread's logger at their level, with their fields", (t) => {
  const posted: WorkerEvents[] = [];
  const batch = new WorkerEventBatch((m) => posted.push(m));
  const log = batch.logger("info").child({ pod: "shop/a" });
  log.debug({ detail: "dropped" }, "below the level");
  log.warn({ destination: "shop/b" }, "HBONE connection failed; app connection reset");
  batch.flush();
  const lines: Array<Record<string, unknown>> = [];
  const main = pino(
    { level: "info", base: null, timestamp: false },
    { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) },
  ).child({ component: "proxy" });
  const { observer } = recordingObserver();
  replayEvents(posted[0]?.events ?? [], observer, main);
  t.is(lines.length, 1);
  t.like(lines[0], {
    level: 40,
    component: "proxy",
    pod: "shop/a",
    destination: "shop/b",
    msg: "HBONE connection failed; app connection reset",
  });
});
