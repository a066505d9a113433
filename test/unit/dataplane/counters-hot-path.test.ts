import { once } from "node:events";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { Worker } from "node:worker_threads";
import test from "ava";
import { Listener } from "../../../agent/dataplane/listener.js";
import { Reactor } from "../../../agent/dataplane/reactor.js";
import { COUNTER, SharedCounters, WorkerCounters } from "../../../agent/dataplane/shared-counters.js";
import { TcpRelay } from "../../../agent/dataplane/tcp-relay.js";
import type { WorkerData, WorkerReply, WorkerRequest } from "../../../agent/dataplane/worker-protocol.js";
import { AgentMetrics } from "../../../agent/metrics/agent-metrics.js";
import { assertNoLeak, fdBaseline } from "../../support/fd-leak.js";
import { backend, relayListener } from "./support/relay.js";

/** `n` connections to `port`, 50 at a time: each sends a line, reads it back and closes. */
async function echoConnections(port: number, n: number): Promise<void> {
  for (let done = 0; done < n; done += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, n - done) }, async (_, i) => {
        const client = net.connect({ host: "127.0.0.1", port });
        await once(client, "connect");
        client.end(`connection ${done + i}\n`);
        for await (const _chunk of client);
      }),
    );
  }
}

async function until(condition: () => boolean, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!condition() && Date.now() < deadline) await sleep(10);
  return condition();
}

function timers(): number {
  return process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
}

test.serial(
  "500 connections through a worker thread post nothing: only the control replies cross its port",
  async (t) => {
    const before = fdBaseline();
    const echo = await backend((socket) => socket.pipe(socket));
    const shared = new SharedCounters(1);
    const workerData: WorkerData = { counters: shared.rowRef(0), row: 0, rows: 1 };
    // The worker itself, not DataplaneWorker: every message it posts is seen here, whatever it is.
    const worker = new Worker(new URL("../../../agent/dataplane/worker.js", import.meta.url), { workerData });
    const exited = once(worker, "exit");
    const replies: WorkerReply[] = [];
    worker.on("message", (reply: WorkerReply) => replies.push(reply));
    worker.on("messageerror", () => replies.push({ id: -1, type: "failed", code: "messageerror", message: "" }));
    const ask = async (request: WorkerRequest): Promise<void> => {
      const count = replies.length;
      worker.postMessage(request);
      t.true(await until(() => replies.length > count), `a reply to ${request.type}`);
    };

    let stopped = false;
    // A failed assertion ends the test at once: stop the worker whatever happens, or it keeps the process alive.
    try {
      const { fd, port } = relayListener();
      await ask({
        id: 1,
        type: "serve",
        listenFd: fd,
        shared: false,
        target: { address: "127.0.0.1", port: echo.port },
        connectTimeoutMs: 5000,
      });
      await echoConnections(port, 500);
      t.true(await until(() => shared.value(0, COUNTER.connections_closed) === 500), "500 clean closes counted");
      t.is(shared.value(0, COUNTER.connections_accepted), 500);
      t.is(shared.value(0, COUNTER.connections_opened), 500);
      t.true(shared.value(0, COUNTER.upstream_bytes) > 500 * "connection 0\n".length);
      t.deepEqual(
        replies.map((r) => r.type),
        ["serving"],
        "the counts arrived through shared memory; the worker posted nothing per connection",
      );
      stopped = true;
      await ask({ id: 2, type: "stop" });
      t.deepEqual([(await exited)[0], replies.map((r) => r.type)], [0, ["serving", "stopped"]]);
    } finally {
      if (!stopped) {
        worker.postMessage({ id: 3, type: "stop" } satisfies WorkerRequest);
        await exited;
      }
      await echo.close();
    }
    await assertNoLeak(t, before);
  },
);

test.serial("idle: counting and exporting add no timer", async (t) => {
  const before = fdBaseline();
  const echo = await backend((socket) => socket.pipe(socket));
  const idleTimers = timers();
  const shared = new SharedCounters(1);
  const counters = new WorkerCounters(shared.rowRef(0));
  const metrics = new AgentMetrics({ defaultMetrics: false });
  // AgentMetrics' CPU sampler is the one timer it has; the data-plane counters must add none.
  const withMetrics = timers();
  metrics.watchDataplane(shared);
  // The relay on this thread's own reactor (as in the EMFILE child): the same code a worker runs, with this
  // thread's timers in view.
  const reactor = new Reactor();
  const relay = new TcpRelay(reactor, {
    target: { address: "127.0.0.1", port: echo.port },
    connectTimeoutMs: 5000,
    counters,
  });
  const { fd, port } = relayListener();
  const listener = new Listener(reactor, fd, counters, (client) => relay.relay(client));
  // A failed assertion ends the test at once: close the reactor whatever happens.
  try {
    await echoConnections(port, 100);
    t.true(await until(() => relay.live === 0), "every connection ended");
    t.is(relay.stats().closed, 100);
    t.is(listener.stats().accepted, 100);
    t.regex(await metrics.registry.metrics(), /ambit_dataplane_connections_closed_total\{worker="0"\} 100\n/);
    await sleep(50);
    t.is(timers(), withMetrics, "no timer left by the relay, its counters or the exporter once idle");
    metrics.close();
    t.is(timers(), idleTimers);
  } finally {
    metrics.close();
    relay.closeAll();
    listener.close();
    await reactor.close();
    await echo.close();
  }
  await assertNoLeak(t, before);
});
