import { once } from "node:events";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { Worker } from "node:worker_threads";
import test, { type ExecutionContext } from "ava";
import { admitting } from "../../../agent/dataplane/admission.js";
import {
  agentLimitFor,
  ConnectionLimits,
  ConnectionLimitTable,
  type LimitReason,
} from "../../../agent/dataplane/connection-limits.js";
import { HboneServer } from "../../../agent/dataplane/inbound-hbone.js";
import { Listener } from "../../../agent/dataplane/listener.js";
import { WorkerCounters } from "../../../agent/dataplane/shared-counters.js";
import { TcpRelay } from "../../../agent/dataplane/tcp-relay.js";
import type { TlsContext } from "../../../agent/dataplane/tls/context.js";
import { TlsTransport } from "../../../agent/dataplane/tls-transport.js";
import { H2Session } from "../../../agent/h2/session.js";
import { formatSpiffeId } from "../../../agent/identity/spiffe.js";
import type { LocalWorkload } from "../../../agent/proxy/workload-index.js";
import { openListenerFd } from "../../../native-bindings/sockets.js";
import { capturingLogger } from "../../support/log-lines.js";
import { within } from "../../support/within.js";
import { localWorkload, loopbackSockets, RecordingObserver, testContext } from "./support/dataplane-context.js";
import { runLeakChecked } from "./support/leak-checked.js";
import type { RacerData, RacerTally } from "./support/limit-racer.js";
import { backend } from "./support/relay.js";
import { closeOf, connectTo, dial, SETTINGS } from "./support/tls-sessions.js";
import { localPort } from "./tls-support.js";

/** Resolves once `check` holds (polled every 10 ms); rejects after `ms`, naming `what`. */
async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(10);
  }
}

test("the default agent limit follows the descriptor limit: one per connection after a reserve, at most 100,000", (t) => {
  t.is(agentLimitFor(1_048_576n), 100_000);
  t.is(agentLimitFor(65_536n), 61_440);
  t.is(agentLimitFor(20_000n), 15_904);
  t.is(agentLimitFor(1024n), 768);
  t.is(agentLimitFor(0n), 100_000, "no limit reported: the cap");
});

/**
 * Runs `churn` take-and-give-backs, then `attempts` acquisitions, on each of `threads` worker threads at once
 * against `table`; their tallies.
 */
async function race(table: ConnectionLimitTable, pods: Array<[string, number]>, threads: number, attempts: number) {
  const go = new SharedArrayBuffer(8);
  const flags = new Int32Array(go);
  const workers = Array.from(
    { length: threads },
    () =>
      new Worker(new URL("./support/limit-racer.js", import.meta.url), {
        workerData: { ref: table.ref(), pods, attempts, churn: 300_000, go } satisfies RacerData,
      }),
  );
  const tallies = workers.map((w) => once(w, "message").then(([m]) => m as RacerTally));
  await until(() => Atomics.load(flags, 1) === threads, "the racers ready", 10_000);
  Atomics.store(flags, 0, 1);
  const results = await within(Promise.all(tallies), 10_000, "the racers' tallies");
  const release = async () => {
    const released = workers.map((w) => once(w, "message"));
    for (const w of workers) w.postMessage("release");
    await within(Promise.all(released), 10_000, "the racers' releases");
    await Promise.all(workers.map((w) => w.terminate()));
  };
  return { results, release };
}

const sum = (tallies: RacerTally[], pick: (t: RacerTally) => Record<string, number>, key: string) =>
  tallies.reduce((n, tally) => n + (pick(tally)[key] ?? 0), 0);

test("threads racing for one pod's connections never get past its limit, and every count comes back", async (t) => {
  const table = new ConnectionLimitTable({ perPod: 1000, perAgent: 1_000_000 });
  const slot = table.assign("shop/db");
  const { results, release } = await race(table, [["shop/db", slot]], 2, 3000);
  t.is(
    sum(results, (r) => r.admitted, "shop/db"),
    1000,
    "exactly the limit admitted over both threads",
  );
  t.is(
    sum(results, (r) => r.refused, "pod_connection_limit"),
    5000,
  );
  t.is(table.podLive("shop/db"), 1000);
  t.is(table.live, 1000);
  await release();
  t.is(table.podLive("shop/db"), 0);
  t.is(table.live, 0);
});

test("threads racing over two pods are held to the agent's limit too, and a full pod is the pod's refusal", async (t) => {
  const table = new ConnectionLimitTable({ perPod: 1000, perAgent: 1500 });
  const pods: Array<[string, number]> = [
    ["shop/db", table.assign("shop/db")],
    ["shop/cart", table.assign("shop/cart")],
  ];
  const { results, release } = await race(table, pods, 2, 4000);
  const admitted = sum(results, (r) => r.admitted, "shop/db") + sum(results, (r) => r.admitted, "shop/cart");
  t.is(admitted, 1500, "exactly the agent's limit admitted");
  t.true(table.podLive("shop/db") <= 1000 && table.podLive("shop/cart") <= 1000);
  t.is(table.live, 1500);
  t.true(sum(results, (r) => r.refused, "agent_connection_limit") > 0);
  t.is(
    sum(results, (r) => r.refused, "agent_connection_limit") + sum(results, (r) => r.refused, "pod_connection_limit"),
    8000 - 1500,
  );
  await release();
  t.is(table.live, 0);
  t.is(table.podLive("shop/db") + table.podLive("shop/cart"), 0);
});

test("a freed slot goes to a new pod only after its last connection closed, when another is free", (t) => {
  const table = new ConnectionLimitTable({ perPod: 10, perAgent: 100 }, 2);
  const limits = new ConnectionLimits(table.ref());
  const a = table.assign("ns/a");
  limits.setPod("ns/a", a);
  t.is(limits.acquire("ns/a"), undefined);
  table.release("ns/a");
  const b = table.assign("ns/b");
  t.not(b, a, "the slot still counting ns/a's open connection is skipped");
  t.is(table.assign("ns/c"), a, "then used, its remainder counted until it closes");
  t.is(table.assign("ns/d"), -1, "no slot left: only the agent's limit holds that pod");
  limits.forgetPod("ns/a");
  limits.setPod("ns/d", -1);
  t.is(limits.acquire("ns/d"), undefined);
  t.is(table.live, 2);
});

const POD_IP = "10.0.0.1";

interface LimitRig {
  observer: RecordingObserver;
  table: ConnectionLimitTable;
  /** The HBONE port of each pod, by key. */
  ports: Map<string, number>;
  cartTls: TlsContext;
  reactor: import("../../../agent/dataplane/reactor.js").Reactor;
  lines: Array<Record<string, unknown>>;
  app(onConnection: (s: net.Socket) => void): Promise<number>;
}

/**
 * HboneServers for pods shop/db (10.0.0.1) and shop/cache (10.0.0.2) on one reactor, each behind a loopback
 * listener whose accepted sockets are admitted as a worker admits them (admitting), with `limits` shared.
 */
function withLimitedPods(
  t: ExecutionContext,
  limits: { perPod: number; perAgent: number },
  handshakeTimeoutMs: number,
  body: (rig: LimitRig) => Promise<void>,
): Promise<void> {
  t.timeout(20_000);
  return runLeakChecked(
    t,
    (base) => {
      const { reactor, context } = base;
      const table = new ConnectionLimitTable(limits);
      const workerLimits = new ConnectionLimits(table.ref());
      const pods: LocalWorkload[] = [localWorkload("db", "db", POD_IP), localWorkload("cache", "cache", "10.0.0.2")];
      const tlsContexts = new Map<string, TlsContext>();
      // Both pods present db's certificate: the client here checks only the chain.
      for (const pod of pods) tlsContexts.set(formatSpiffeId(pod.id), context(base.db));
      const appPorts: number[] = [];
      const sockets = loopbackSockets((dst) =>
        dst.address === POD_IP ? { address: "127.0.0.1", port: appPorts[0] ?? dst.port } : dst,
      );
      const observer = new RecordingObserver();
      const { logger, lines } = capturingLogger("warn");
      const ctx = testContext(reactor, {
        observer,
        sockets: sockets.factory,
        tlsContexts,
        tuning: { handshakeTimeoutMs },
        limits: workerLimits,
        log: logger,
      });
      const servers: HboneServer[] = [];
      const listeners: Listener[] = [];
      const ports = new Map<string, number>();
      for (const pod of pods) {
        workerLimits.setPod(pod.key, table.assign(pod.key));
        const server = new HboneServer(ctx, pod);
        const lfd = openListenerFd({ address: "127.0.0.1", port: 0 });
        const onAccept = admitting(ctx, pod.key, "hbone", logger, (fd) => server.accept(fd));
        listeners.push(new Listener(reactor, lfd, WorkerCounters.standalone(), onAccept));
        servers.push(server);
        ports.set(pod.key, localPort(lfd));
      }
      const apps: net.Server[] = [];
      return {
        world: {
          observer,
          table,
          ports,
          cartTls: context(base.cart),
          reactor,
          lines,
          app: async (onConnection) => {
            const s = net.createServer(onConnection);
            apps.push(s);
            s.listen(0, "127.0.0.1");
            await once(s, "listening");
            const port = (s.address() as net.AddressInfo).port;
            appPorts.push(port);
            return port;
          },
        },
        release: () => {
          for (const l of listeners) l.close();
          for (const s of apps) s.close();
        },
        destroy: () => {
          for (const s of servers) s.destroy();
        },
        live: () => servers.reduce((n, s) => n + s.live, 0),
      };
    },
    body,
  );
}

/** A plain TCP connection that never starts TLS, and a promise of its close (true: by an error, a reset). */
function tcpTo(port: number): { socket: net.Socket; closed: Promise<boolean> } {
  const socket = net.connect({ host: "127.0.0.1", port });
  socket.on("error", () => {});
  socket.resume();
  const closed = new Promise<boolean>((resolve) => socket.once("close", (hadError) => resolve(hadError)));
  return { socket, closed };
}

/** tcpTo, once connected (a connection the test expects to be admitted). */
async function idleTcp(port: number): Promise<{ socket: net.Socket; closed: Promise<boolean> }> {
  const c = tcpTo(port);
  await within(once(c.socket, "connect"), 5000, "connect");
  return c;
}

function refusals(observer: RecordingObserver, reason: LimitReason): number {
  return observer.refused.filter((r) => r.reason === reason).length;
}

test.serial(
  "connections in their TLS handshake count against the pod: past its limit the next is reset and counted, and the count comes back at the handshake timeout",
  (t) =>
    withLimitedPods(t, { perPod: 3, perAgent: 100 }, 500, async (rig) => {
      const port = rig.ports.get("shop/db") as number;
      const held = [await idleTcp(port), await idleTcp(port), await idleTcp(port)];
      await until(() => rig.table.podLive("shop/db") === 3, "three connections counted");
      const extra = tcpTo(port);
      t.true(await within(extra.closed, 5000, "the fourth connection's reset"), "reset (an error), not a FIN");
      const second = tcpTo(port);
      await within(second.closed, 5000, "the fifth connection's reset");
      t.deepEqual(rig.observer.refused[0], { pod: "shop/db", direction: "inbound", reason: "pod_connection_limit" });
      t.is(refusals(rig.observer, "pod_connection_limit"), 2);
      const logged = rig.lines.filter((l) => l.reason === "pod_connection_limit");
      t.is(logged.length, 1, "two refusals, one log line (throttled)");
      t.like(logged[0], { listener: "hbone", limit: 3, live: 3 });
      t.is(rig.table.podLive("shop/db"), 3, "a refused connection is not counted");

      // The handshake timeout closes the three; their counts come back and the pod takes connections again.
      await within(Promise.all(held.map((h) => h.closed)), 5000, "the handshake timeout");
      await until(() => rig.table.podLive("shop/db") === 0, "counts back after the timeout");
      t.is(rig.table.live, 0);
      const transport = await TlsTransport.open({
        reactor: rig.reactor,
        context: rig.cartTls,
        fd: dial(port),
        role: "client",
        handshakeTimeoutMs: 5000,
      });
      t.is(rig.table.podLive("shop/db"), 1, "a new connection is admitted and counted");
      transport.destroy();
      await until(() => rig.table.podLive("shop/db") === 0, "its count back when it closes");
    }),
);

test.serial(
  "the agent's limit holds over every pod: a pod under its own limit is refused once the agent is full",
  (t) =>
    withLimitedPods(t, { perPod: 10, perAgent: 2 }, 5000, async (rig) => {
      const db = rig.ports.get("shop/db") as number;
      const cache = rig.ports.get("shop/cache") as number;
      const first = await idleTcp(db);
      const second = await idleTcp(cache);
      await until(() => rig.table.live === 2, "two connections counted");
      const refused = tcpTo(db);
      await within(refused.closed, 5000, "the third connection's reset");
      t.deepEqual(rig.observer.refused, [{ pod: "shop/db", direction: "inbound", reason: "agent_connection_limit" }]);
      t.like(
        rig.lines.find((l) => l.reason === "agent_connection_limit"),
        { limit: 2, live: 2 },
      );
      // One closes: its count comes back and the next connection is admitted.
      first.socket.destroy();
      await until(() => rig.table.live === 1, "a count back when a connection closes");
      const third = await idleTcp(cache);
      await until(() => rig.table.live === 2, "the next connection admitted");
      t.is(rig.table.podLive("shop/cache"), 2);
      second.socket.destroy();
      third.socket.destroy();
      await within(Promise.all([first.closed, second.closed, third.closed]), 5000, "the clients' close");
      await until(() => rig.table.live === 0, "every count back");
    }),
);

test.serial(
  "HBONE streams count against the pod as its session does: past the limit a CONNECT gets 503, and ending streams frees room",
  (t) =>
    withLimitedPods(t, { perPod: 3, perAgent: 100 }, 5000, async (rig) => {
      const appSockets: net.Socket[] = [];
      const appPort = await rig.app((s) => {
        s.on("error", () => {});
        appSockets.push(s);
      });
      const transport = await TlsTransport.open({
        reactor: rig.reactor,
        context: rig.cartTls,
        fd: dial(rig.ports.get("shop/db") as number),
        role: "client",
        handshakeTimeoutMs: 5000,
      });
      const session = new H2Session(transport, { role: "client", settings: SETTINGS });
      const sessionClosed = closeOf(session);
      const authority = `${POD_IP}:${appPort}`;
      const first = connectTo(session, authority);
      const second = connectTo(session, authority);
      t.is(await within(first.status, 5000, "first stream"), "200");
      t.is(await within(second.status, 5000, "second stream"), "200");
      t.is(rig.table.podLive("shop/db"), 3, "the session and its two streams");
      const third = connectTo(session, authority);
      t.is(await within(third.status, 5000, "third stream"), "503");
      t.is(refusals(rig.observer, "pod_connection_limit"), 1);
      t.like(
        rig.lines.find((l) => l.reason === "pod_connection_limit"),
        { listener: "hbone_stream" },
      );

      // The app ends the first stream's connection: its count comes back and a new stream is served.
      await until(() => appSockets.length === 2, "both app connections");
      appSockets[0]?.destroy();
      first.stream.end();
      await within(first.closed, 5000, "first stream's close");
      await until(() => rig.table.podLive("shop/db") === 2, "the first stream's count back");
      const fourth = connectTo(session, authority);
      t.is(await within(fourth.status, 5000, "fourth stream"), "200");
      t.is(rig.table.podLive("shop/db"), 3);

      for (const x of [second, third, fourth]) x.stream.end();
      for (const s of appSockets) s.destroy();
      session.close();
      await within(sessionClosed, 5000, "session close");
      await until(() => rig.table.live === 0, "every count back once the session closed");
    }),
);

test.serial("relayed connections are released when the relay closes their sockets, however they end", async (t) => {
  const echo = await backend((socket) => {
    socket.on("error", () => {});
    socket.pipe(socket);
  });
  t.teardown(() => echo.close());
  await runLeakChecked(
    t,
    ({ reactor }) => {
      const table = new ConnectionLimitTable({ perPod: 2, perAgent: 100 });
      const limits = new ConnectionLimits(table.ref());
      limits.setPod("shop/db", table.assign("shop/db"));
      const observer = new RecordingObserver();
      const ctx = testContext(reactor, { observer, limits });
      const relay = new TcpRelay(reactor, {
        target: { address: "127.0.0.1", port: echo.port },
        connectTimeoutMs: 5000,
        counters: ctx.counters,
      });
      const lfd = openListenerFd({ address: "127.0.0.1", port: 0 });
      const listener = new Listener(
        reactor,
        lfd,
        ctx.counters,
        admitting(ctx, "shop/db", "inbound", ctx.log, (fd) => relay.relay(fd)),
      );
      return {
        world: { table, observer, port: localPort(lfd) },
        release: () => listener.close(),
        destroy: () => relay.closeAll(),
        live: () => relay.live,
      };
    },
    async ({ table, observer, port }) => {
      const echoed = async () => {
        const s = net.connect({ host: "127.0.0.1", port });
        s.on("error", () => {});
        await within(once(s, "connect"), 5000, "connect");
        s.write("ping");
        await within(once(s, "data"), 5000, "echo");
        return s;
      };
      const a = await echoed();
      const b = await echoed();
      t.is(table.podLive("shop/db"), 2);
      const c = net.connect({ host: "127.0.0.1", port });
      c.on("error", () => {});
      await within(new Promise((resolve) => c.once("close", resolve)), 5000, "the third connection's reset");
      t.deepEqual(observer.refused, [{ pod: "shop/db", direction: "inbound", reason: "pod_connection_limit" }]);
      // One ends cleanly (FIN both ways), one by a reset: both counts come back.
      a.end();
      b.resetAndDestroy();
      await until(() => table.podLive("shop/db") === 0, "both counts back");
      const d = await echoed();
      t.is(table.podLive("shop/db"), 1);
      d.destroy();
      await until(() => table.live === 0, "the last count back");
    },
  );
});
