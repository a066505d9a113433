import { once } from "node:events";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import test from "ava";
import { COUNTER, DATAPLANE_COUNTERS, SharedCounters } from "../../../agent/dataplane/shared-counters.js";
import { DataplaneWorker } from "../../../agent/dataplane/worker-handle.js";
import { AgentMetrics } from "../../../agent/metrics/agent-metrics.js";
import { counterIncrease } from "../../../agent/metrics/dataplane-metrics.js";
import { assertNoLeak, fdBaseline } from "../../support/fd-leak.js";
import { backend, relayListener } from "../dataplane/support/relay.js";

/** Bytes each connection sends and gets echoed. */
const MESSAGE = "0123456789abcdef".repeat(4);

/** ambit_dataplane_* sample lines of the registry's text, "name{labels}" -> value. */
async function scrape(metrics: AgentMetrics): Promise<Map<string, number>> {
  const samples = new Map<string, number>();
  for (const line of (await metrics.registry.metrics()).split("\n")) {
    const m = /^(ambit_dataplane_\w+\{[^}]*\}) (\S+)$/.exec(line);
    if (m) samples.set(m[1] as string, Number(m[2]));
  }
  return samples;
}

function sample(samples: Map<string, number>, counter: string, worker: number): number | undefined {
  return samples.get(`ambit_dataplane_${counter}_total{worker="${worker}"}`);
}

/** `n` connections through the relay at `port`, 25 at a time: each sends MESSAGE, reads it back and closes. */
async function echoConnections(port: number, n: number): Promise<void> {
  for (let done = 0; done < n; done += 25) {
    await Promise.all(
      Array.from({ length: Math.min(25, n - done) }, async () => {
        const client = net.connect({ host: "127.0.0.1", port });
        await once(client, "connect");
        client.write(MESSAGE);
        let got = "";
        for await (const chunk of client) {
          got += String(chunk);
          if (got.length >= MESSAGE.length) break;
        }
        client.destroySoon();
        if (!client.destroyed) await once(client, "close");
      }),
    );
  }
}

/** Waits (5 s at most) until worker `row` has counted `n` connections as ended. */
async function endedCount(shared: SharedCounters, row: number, n: number): Promise<number> {
  const ended = () => shared.value(row, COUNTER.connections_closed) + shared.value(row, COUNTER.connections_reset);
  const deadline = Date.now() + 5000;
  while (ended() < n && Date.now() < deadline) await sleep(10);
  return ended();
}

interface Slot {
  worker: DataplaneWorker;
  port: number;
}

async function startSlot(shared: SharedCounters, row: number, echoPort: number): Promise<Slot> {
  const worker = new DataplaneWorker({ counters: shared.rowRef(row) });
  const { fd, port } = relayListener();
  await worker.serve(fd, { address: "127.0.0.1", port: echoPort }, 5000);
  return { worker, port };
}

test("counterIncrease: growth since the last read, or the whole value after a row started over", (t) => {
  t.is(counterIncrease(0, 0), 0);
  t.is(counterIncrease(5, 12), 7);
  t.is(counterIncrease(12, 12), 0);
  t.is(counterIncrease(12, 3), 3, "a lower value counts as a reset, never as a decrease");
});

test.serial(
  "two worker threads relaying loopback connections: the registry shows each worker's counts and their sum, and only ever goes up, across a worker restart",
  async (t) => {
    const before = fdBaseline();
    const echo = await backend((socket) => socket.pipe(socket));
    const shared = new SharedCounters(2);
    const metrics = new AgentMetrics({ defaultMetrics: false });
    t.teardown(() => metrics.close());
    metrics.watchDataplane(shared);

    const first = await scrape(metrics);
    for (const { name } of DATAPLANE_COUNTERS) {
      t.is(sample(first, name, 0), 0, `${name} has a series for worker 0 before any traffic`);
      t.is(sample(first, name, 1), 0);
    }
    t.is([...first.keys()].filter((k) => !/worker="[01]"/.test(k)).length, 0, "worker label values are 0 and 1 only");

    // Stopped whatever happens: a failed assertion ends the test, and a running worker would keep the process alive.
    const running = new Set<DataplaneWorker>();
    const start = async (row: number) => {
      const slot = await startSlot(shared, row, echo.port);
      running.add(slot.worker);
      return slot;
    };
    const stop = async (slot: Slot) => {
      running.delete(slot.worker);
      t.is(await slot.worker.stop(), 0);
    };
    let echoClosed: Promise<void> | undefined;
    const closeEcho = () => {
      echoClosed ??= echo.close();
      return echoClosed;
    };
    t.teardown(async () => {
      await Promise.all([...running].map((worker) => worker.stop()));
      await closeEcho();
    });
    const zero = await start(0);
    let one = await start(1);
    await echoConnections(zero.port, 60);
    await echoConnections(one.port, 40);
    t.is(await endedCount(shared, 0, 60), 60);
    t.is(await endedCount(shared, 1, 40), 40);
    const second = await scrape(metrics);
    t.is(sample(second, "connections_accepted", 0), 60);
    t.is(sample(second, "connections_opened", 0), 60);
    t.is(sample(second, "connections_closed", 0), 60);
    t.is(sample(second, "connections_accepted", 1), 40);
    t.is(sample(second, "connections_closed", 1), 40);
    t.is(sample(second, "upstream_bytes", 0), 60 * MESSAGE.length);
    t.is(sample(second, "downstream_bytes", 1), 40 * MESSAGE.length);
    t.is(sample(second, "connect_failures", 0), 0);
    t.is((sample(second, "connections_opened", 0) ?? 0) + (sample(second, "connections_opened", 1) ?? 0), 100);
    t.is(shared.sum(COUNTER.connections_opened), 100, "the reader's sum over workers");

    await echoConnections(zero.port, 40);
    t.is(await endedCount(shared, 0, 100), 100);
    // Worker 1 is replaced: the new thread gets the slot's row and counts on from 40.
    await stop(one);
    one = await start(1);
    await echoConnections(one.port, 10);
    t.is(await endedCount(shared, 1, 50), 50);
    const third = await scrape(metrics);
    t.is(sample(third, "connections_opened", 0), 100);
    t.is(sample(third, "connections_opened", 1), 50, "the restarted worker's counts add to its slot's");
    t.is(sample(third, "upstream_bytes", 1), 50 * MESSAGE.length);
    const fourth = await scrape(metrics);
    for (const [key, value] of second) {
      t.true((third.get(key) ?? -1) >= value, `${key} did not go down (${value} -> ${third.get(key)})`);
      t.is(fourth.get(key), third.get(key), `${key} holds still without traffic`);
    }
    await stop(zero);
    await stop(one);
    await closeEcho();
    await assertNoLeak(t, before);
  },
);
