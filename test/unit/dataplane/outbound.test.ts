import { connect as tcpConnect } from "node:net";
import test, { type ExecutionContext } from "ava";
import { peerAddress } from "../../../agent/dataplane/fd.js";
import { HbonePool } from "../../../agent/dataplane/hbone-pool.js";
import { Listener } from "../../../agent/dataplane/listener.js";
import { relayOutbound } from "../../../agent/dataplane/outbound.js";
import { WorkerCounters } from "../../../agent/dataplane/shared-counters.js";
import { TcpRelay } from "../../../agent/dataplane/tcp-relay.js";
import type { TlsContext } from "../../../agent/dataplane/tls/context.js";
import { TlsTransport } from "../../../agent/dataplane/tls-transport.js";
import { H2Session } from "../../../agent/h2/session.js";
import type { H2Stream } from "../../../agent/h2/stream.js";
import { formatSpiffeId } from "../../../agent/identity/spiffe.js";
import { type LineLog, silentLogger } from "../../../agent/log.js";
import { AgentMetrics } from "../../../agent/metrics/agent-metrics.js";
import { observers } from "../../../agent/proxy/observer.js";
import { HBONE_PORT } from "../../../agent/redirect/ports.js";
import { openListenerFd } from "../../../native-bindings/sockets.js";
import { capturingLogger } from "../../support/log-lines.js";
import { within } from "../../support/within.js";
import { sid } from "../identity/helpers.js";
import {
  localWorkload,
  loopbackSockets,
  meshIndex,
  meshWorkload,
  RecordingObserver,
  testContext,
} from "./support/dataplane-context.js";
import { type LeakChecked, runLeakChecked } from "./support/leak-checked.js";
import { handlers, SETTINGS } from "./support/tls-sessions.js";
import { localPort } from "./tls-support.js";

/**
 * The outbound path from the app's accepted connection on (relayOutbound: what handleOutbound does once
 * SO_ORIGINAL_DST named the destination), without root: the app is a Node client on loopback, the destination
 * pod's HBONE port is routed to a server on loopback with db's certificate that answers whatever the test likes.
 */

/** The app's pod (cart's identity), and the destination: a db pod at 10.0.1.1. */
const web1 = localWorkload("web-1", "cart", "10.0.0.1");
const db1 = meshWorkload("db-1", "db", "10.0.1.1");
const DESTINATION = { address: "10.0.1.1", port: 8080 };

interface World extends LeakChecked {
  observer: RecordingObserver;
  /** The port the pod's outbound listener accepts the app's connections on. */
  port: number;
  /** CONNECTs the destination received. */
  received(): number;
}

/**
 * Runs `body` with an outbound listener for web-1 whose connections go over HBONE to a destination answering each
 * CONNECT with the HEADERS `answer(n)` gives its n-th (0-based), raw: any `:status` at all, as a hostile peer can.
 */
interface Options {
  metrics: AgentMetrics;
  /** The HEADERS' `:status` for the n-th CONNECT (0-based). */
  answer: (n: number) => string;
  /** Whose certificate the destination presents; default db's, the identity the index expects there. */
  serverAs?: "db" | "cart";
  log?: LineLog;
}

function withOutbound(t: ExecutionContext, options: Options, body: (w: World) => Promise<void>): Promise<void> {
  const { metrics, answer } = options;
  t.timeout(30_000);
  return runLeakChecked(
    t,
    (base) => {
      const { reactor } = base;
      const sessions: H2Session[] = [];
      let received = 0;
      const serverFd = openListenerFd({ address: "127.0.0.1", port: 0 });
      const serverContext = base.context(options.serverAs === "cart" ? base.cart : base.db);
      const server = new Listener(reactor, serverFd, WorkerCounters.standalone(), (fd) => {
        TlsTransport.open({ reactor, context: serverContext, fd, role: "server", handshakeTimeoutMs: 5000 }).then(
          (transport) => {
            const session = new H2Session(transport, { role: "server", settings: SETTINGS });
            sessions.push(session);
            session.on("stream", (stream: H2Stream) => {
              // The client resets each refused stream; nothing else is expected.
              stream.attach(handlers(stream, { reset: () => {} }));
              session.sendHeaders(stream, [[":status", answer(received++)]], false);
              // Answered, as respond() would mark it: the client's resets are not the early ones a server limits.
              stream.headersDone = true;
            });
          },
          () => {},
        );
      });
      const observer = new RecordingObserver();
      const contexts = new Map<string, TlsContext>([[formatSpiffeId(sid("shop", "cart")), base.context(base.cart)]]);
      const ctx = testContext(reactor, {
        observer: observers(observer, metrics),
        tlsContexts: contexts,
        index: meshIndex(db1),
        sockets: loopbackSockets((dst) =>
          dst.port === HBONE_PORT ? { address: "127.0.0.1", port: localPort(serverFd) } : dst,
        ).factory,
      });
      const pool = new HbonePool(ctx);
      const relay = new TcpRelay(reactor, { connectTimeoutMs: 5000, counters: ctx.counters });
      const deps = { ctx, pool, relay, connecting: new Set<() => void>() };
      const appFd = openListenerFd({ address: "127.0.0.1", port: 0 });
      const outbound = new Listener(reactor, appFd, WorkerCounters.standalone(), (fd) =>
        relayOutbound(deps, web1, fd, peerAddress(fd), DESTINATION, options.log ?? silentLogger),
      );
      return {
        world: { ...base, observer, port: localPort(appFd), received: () => received },
        release: () => {
          outbound.close();
          server.close();
          pool.closeAll();
          relay.closeAll();
          for (const s of sessions) s.destroy();
        },
        live: () => relay.live,
      };
    },
    body,
  );
}

/** An app connection through the outbound listener; resolves once the proxy closed it (reset, on a refusal). */
function appConnection(port: number): Promise<void> {
  return new Promise((resolve) => {
    const s = tcpConnect({ host: "127.0.0.1", port });
    s.on("error", () => {});
    s.on("close", () => resolve());
  });
}

/** Series in a Prometheus exposition, without their values: its lines that are not comments. */
async function seriesOf(metrics: AgentMetrics): Promise<string[]> {
  return (await metrics.registry.metrics())
    .split("\n")
    .filter((line) => line !== "" && !line.startsWith("#"))
    .map((line) => line.replace(/ [^ ]+$/, ""));
}

test.serial("10,000 distinct :status answers from a hostile destination: refusals in four series, no more", (t) => {
  const metrics = new AgentMetrics({ defaultMetrics: false });
  t.teardown(() => metrics.close());
  // The statuses ambit tells apart, then other three-digit statuses, and strings that are no status at all, each
  // once (none starting with "1": those are informational answers, charged to the frame budget). A string that is
  // not three digits resets its stream in the HTTP/2 client (PROTOCOL_ERROR): never a label, and no refusal either.
  const answer = (n: number) => {
    if (n % 10 === 0) return "401";
    if (n % 10 === 1) return "403";
    if (n % 10 === 2) return "503";
    return n % 2 ? String(201 + (n % 99)) : `hostile-${n}`;
  };
  return withOutbound(t, { metrics, answer }, async (w) => {
    const TOTAL = 10_000;
    const BATCH = 200;
    let first: string[] = [];
    for (let start = 0; start < TOTAL; start += BATCH) {
      const batch = Array.from({ length: BATCH }, () => appConnection(w.port));
      await within(Promise.all(batch), 10_000, `app connections from ${start} closed`);
      if (start === 0) first = await seriesOf(metrics);
    }
    t.is(w.received(), TOTAL, "every app connection became a CONNECT");
    t.deepEqual(w.observer.results("client"), ["ok"], "all over one session");
    const reasons = new Map<string, number>();
    for (const r of w.observer.refused) reasons.set(r.reason, (reasons.get(r.reason) ?? 0) + 1);
    t.deepEqual(Object.fromEntries(reasons), {
      hbone_status_401: TOTAL / 10,
      hbone_status_403: TOTAL / 10,
      hbone_status_503: TOTAL / 10,
      hbone_status_other: (TOTAL * 4) / 10,
    });
    const refused = await metrics.registry.getSingleMetric("ambit_connections_refused_total")?.get();
    t.is(refused?.values.length, 4);
    t.deepEqual(await seriesOf(metrics), first, "the same series after 200 connections as after 10,000");
    t.false(/hostile|status_2\d{4}/.test(await metrics.registry.metrics()), "no peer-supplied value in any label");
  });
});

test.serial(
  "a destination that fails every handshake: each app connection refused and counted, one warning per interval",
  (t) => {
    const metrics = new AgentMetrics({ defaultMetrics: false });
    t.teardown(() => metrics.close());
    const captured = capturingLogger("info");
    // The destination presents cart's certificate where the index expects db's.
    return withOutbound(t, { metrics, answer: () => "200", serverAs: "cart", log: captured.logger }, async (w) => {
      const TOTAL = 30;
      for (let i = 0; i < TOTAL; i++) await within(appConnection(w.port), 5000, `app connection ${i} closed`);
      t.is(w.received(), 0, "no CONNECT reached the impostor");
      t.deepEqual(
        w.observer.refused.map((r) => r.reason),
        Array(TOTAL).fill("hbone_identity_mismatch"),
      );
      const warnings = captured.lines.filter((l) => l.msg === "HBONE connection failed; app connection reset");
      t.is(warnings.length, 1);
      t.like(warnings[0], { level: 40, destination: "shop/db-1", reason: "hbone_identity_mismatch", suppressed: 0 });
    });
  },
);
