import test from "ava";
import { ConnectionTracker } from "../../../agent/admin/connection-tracker.js";
import { formatIdentity } from "../../../agent/cli/certs-command.js";
import { formatBytes, formatConnection, formatDuration, newRows } from "../../../agent/cli/tap-format.js";
import type { ConnectionInfo } from "../../../agent/proxy/observer.js";

const A = "spiffe://cluster.local/ns/default/sa/a";
const B = "spiffe://cluster.local/ns/default/sa/b";

function conn(id: number, over: Partial<ConnectionInfo> = {}): ConnectionInfo {
  return {
    id,
    reporter: "source",
    source: { workload: "a", namespace: "default", principal: A, ip: "10.9.1.2" },
    destination: { workload: "b", namespace: "default", principal: B, ip: "10.9.2.2", port: 8080 },
    tls: true,
    pod: "default/a",
    startedAt: 1_000,
    ...over,
  };
}

test("tracker: live until closed, then in a bounded ring of recent ones, oldest first", (t) => {
  const tr = new ConnectionTracker({ recent: 3 });
  for (let i = 1; i <= 5; i += 1) tr.connectionOpened(conn(i));
  t.deepEqual(
    tr.snapshot(1_500).live.map((r) => [r.id, r.state, r.durationMs]),
    [1, 2, 3, 4, 5].map((i) => [i, "open", 500]),
  );
  for (let i = 1; i <= 5; i += 1) tr.connectionClosed(conn(i), { sent: i, received: 10 * i, durationMs: i });
  const snap = tr.snapshot();
  t.is(snap.live.length, 0);
  t.deepEqual(
    snap.recent.map((r) => [r.id, r.sent, r.received]),
    [
      [3, 3, 30],
      [4, 4, 40],
      [5, 5, 50],
    ],
  );
});

test("tap lines: source pod and identity, destination, tls, bytes, duration", (t) => {
  const tr = new ConnectionTracker();
  tr.connectionOpened(conn(1));
  t.is(
    formatConnection(tr.snapshot(1_250).live[0] as never),
    `open src=default/a (${A}) dst=default/b 10.9.2.2:8080 (${B}) tls=true sent=- recv=- duration=250ms reporter=source`,
  );
  tr.connectionClosed(conn(1), { sent: 12, received: 4096, durationMs: 1500 });
  const plain = conn(2, {
    reporter: "destination",
    tls: false,
    pod: "default/b-7f9",
    source: { workload: "c", namespace: "default", principal: "", ip: "10.9.1.3" },
    destination: { workload: "b", namespace: "default", principal: "", ip: "10.9.2.2", port: 8080 },
  });
  tr.connectionOpened(plain);
  tr.connectionClosed(plain, { sent: 1, received: 2, durationMs: 3, error: "reset" });
  const [first, second] = tr.snapshot().recent.map(formatConnection);
  t.is(
    first,
    `end  src=default/a (${A}) dst=default/b 10.9.2.2:8080 (${B}) tls=true sent=12B recv=4.0KiB duration=1.5s reporter=source`,
  );
  t.is(
    second,
    'end  src=default/c (unknown) dst=default/b-7f9 10.9.2.2:8080 (unknown) tls=false sent=1B recv=2B duration=3ms reporter=destination error="reset"',
  );
  t.is(formatBytes(3 * 1024 ** 3), "3.0GiB");
  t.is(formatDuration(125_000), "2m5s");
});

test("--follow prints a connection once when it opens and once when it ends", (t) => {
  const tr = new ConnectionTracker();
  const seen = new Set<string>();
  const rows = () => {
    const s = tr.snapshot();
    return newRows([...s.recent, ...s.live], seen).map((r) => `${r.id}:${r.state}`);
  };
  tr.connectionOpened(conn(1));
  t.deepEqual(rows(), ["1:open"]);
  t.deepEqual(rows(), []);
  tr.connectionOpened(conn(2));
  tr.connectionClosed(conn(1), { sent: 1, received: 1, durationMs: 1 });
  t.deepEqual(rows(), ["1:closed", "2:open"]);
  t.deepEqual(rows(), []);
});

test("certs lines: identity, state, expiry", (t) => {
  const now = Date.parse("2026-01-01T00:00:00Z");
  t.is(
    formatIdentity(
      { spiffeId: A, state: "ready", pods: ["default/a"], serial: "0A", notAfter: "2026-01-01T01:00:00.000Z" },
      now,
    ),
    `${A} state=ready expires=2026-01-01T01:00:00.000Z (in 60m0s) serial=0A pods=default/a`,
  );
  t.is(
    formatIdentity({ spiffeId: B, state: "pending", pods: ["default/b"], lastError: "CA down" }, now),
    `${B} state=pending expires=- (no valid certificate) serial=- pods=default/b error="CA down"`,
  );
});
