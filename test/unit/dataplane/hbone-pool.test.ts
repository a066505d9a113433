import { setTimeout as sleep } from "node:timers/promises";
import test, { type ExecutionContext } from "ava";
import { HbonePool } from "../../../agent/dataplane/hbone-pool.js";
import { Listener } from "../../../agent/dataplane/listener.js";
import type { PodDial } from "../../../agent/dataplane/pod-socket.js";
import type { Reactor } from "../../../agent/dataplane/reactor.js";
import { WorkerCounters } from "../../../agent/dataplane/shared-counters.js";
import type { TlsContext } from "../../../agent/dataplane/tls/context.js";
import { TlsTransport } from "../../../agent/dataplane/tls-transport.js";
import { H2Session } from "../../../agent/h2/session.js";
import type { LocalSettings } from "../../../agent/h2/settings.js";
import type { H2Stream } from "../../../agent/h2/stream.js";
import { formatSpiffeId } from "../../../agent/identity/spiffe.js";
import { ProxyError } from "../../../agent/proxy/errors.js";
import type { HboneTuning } from "../../../agent/proxy/tuning.js";
import { HBONE_PORT } from "../../../agent/redirect/ports.js";
import { closeFd, IPPROTO_TCP, SOL_SOCKET } from "../../../native-bindings/io.js";
import { getsockoptInt, SO_KEEPALIVE, TCP_KEEPIDLE, TCP_USER_TIMEOUT } from "../../../native-bindings/libc.js";
import { openListenerFd } from "../../../native-bindings/sockets.js";
import { handlers } from "../../support/h2-handlers.js";
import { within } from "../../support/within.js";
import { type Workload as Issued, sid } from "../identity/helpers.js";
import {
  localWorkload,
  loopbackSockets,
  meshWorkload,
  RecordingObserver,
  testContext,
} from "./support/dataplane-context.js";
import { type LeakChecked, runLeakChecked } from "./support/leak-checked.js";
import { closeOf } from "./support/tls-sessions.js";
import { localPort } from "./tls-support.js";

/**
 * The data plane's HBONE client pool: real loopback TCP (every pod address is routed to a local listener), real
 * mTLS with SPIFFE certificates from a test CA, the servers on the same Reactor as the pool.
 */

const CART = formatSpiffeId(sid("shop", "cart"));
/** The client pods carry the cart identity; the destinations db (and, moved to db's IP, a cart pod). */
const web1 = localWorkload("web-1", "cart", "10.0.0.1");
const web10 = localWorkload("web-10", "cart", "10.0.0.10");
const db1 = meshWorkload("db-1", "db", "10.0.1.1");
const db2 = meshWorkload("db-2", "db", "10.0.1.2");

interface Connection {
  /** The server finished its TLS handshake (else it failed: the client gave up or refused). */
  handshake: boolean;
  /** Plaintext the server received after its handshake, until the connection closed. */
  bytes: number;
}

interface HboneServer {
  port: number;
  /** TLS handshakes the server finished. */
  handshakes: number;
  sessions: H2Session[];
  /** :authority of every CONNECT received, in order. */
  authorities: string[];
  /** Raw servers: the outcome of the n-th connection (0-based) once it is over. */
  connection(n: number): Promise<Connection>;
  close(): void;
}

/**
 * An HBONE server on loopback presenting `context`'s identity: "h2" answers every CONNECT with 200 and echoes;
 * "raw" reads whatever plaintext the client sends after the handshake and never answers (what a refused peer saw).
 */
function hboneServer(
  reactor: Reactor,
  context: TlsContext,
  mode: "h2" | "raw" = "h2",
  settings: Partial<LocalSettings> = {},
): HboneServer {
  const lfd = openListenerFd({ address: "127.0.0.1", port: 0 });
  const transports: TlsTransport[] = [];
  const outcomes: { promise: Promise<Connection>; resolve: (c: Connection) => void }[] = [];
  const outcome = (n: number) => {
    while (outcomes.length <= n) {
      let resolve: (c: Connection) => void = () => {};
      const promise = new Promise<Connection>((r) => {
        resolve = r;
      });
      outcomes.push({ promise, resolve });
    }
    return outcomes[n] as { promise: Promise<Connection>; resolve: (c: Connection) => void };
  };
  let accepted = 0;
  const server: HboneServer = {
    port: localPort(lfd),
    handshakes: 0,
    sessions: [],
    authorities: [],
    connection: (n) => outcome(n).promise,
    close: () => {
      listener.close();
      for (const s of server.sessions) s.destroy();
      for (const tr of transports) tr.destroy();
    },
  };
  const listener = new Listener(reactor, lfd, WorkerCounters.standalone(), (fd) => {
    const done = outcome(accepted++).resolve;
    TlsTransport.open({ reactor, context, fd, role: "server", handshakeTimeoutMs: 5000 }).then(
      (transport) => {
        server.handshakes++;
        if (mode === "raw") {
          transports.push(transport);
          let bytes = 0;
          transport.start({
            receive: (buf) => {
              bytes += buf.length;
            },
            drained: () => {},
            ended: () => {},
            errored: () => {},
            closed: () => done({ handshake: true, bytes }),
          });
          return;
        }
        const session = new H2Session(transport, { role: "server", settings });
        server.sessions.push(session);
        session.on("stream", (stream: H2Stream, headers: [string, string][]) => {
          server.authorities.push(headers.find(([n]) => n === ":authority")?.[1] ?? "");
          echo(stream);
        });
      },
      // The transport released the fd; the client gave up or refused our certificate.
      () => done({ handshake: false, bytes: 0 }),
    );
  });
  return server;
}

/**
 * Answers 200 and sends every byte back, ends after the peer's end. The tests send a few bytes at a time, so what is
 * written is never held back long enough to matter; a reset is expected (a pool's closeAll ends every test).
 */
function echo(stream: H2Stream): void {
  stream.attach(
    handlers(stream, {
      data: (c) => {
        stream.write(Buffer.from(c));
        stream.consumed(c.length);
      },
      end: () => stream.end(),
      reset: () => {},
    }),
  );
  stream.respond(200);
}

/** The client end of a CONNECT stream: its status, an echo round trip, its end. */
interface Client {
  status: Promise<string>;
  echo(text: string): Promise<string>;
  /** Ends our direction; resolves once the stream is closed both ways. */
  end(): Promise<void>;
}

function client(stream: H2Stream): Client {
  let got = "";
  let wanted = 0;
  let arrived: () => void = () => {};
  let setStatus: (s: string) => void = () => {};
  let setClosed: () => void = () => {};
  const status = new Promise<string>((resolve) => {
    setStatus = resolve;
  });
  const closed = new Promise<void>((resolve) => {
    setClosed = resolve;
  });
  stream.attach(
    handlers(stream, {
      headers: (h) => setStatus(h.find(([n]) => n === ":status")?.[1] ?? ""),
      data: (c) => {
        got += c.toString();
        stream.consumed(c.length);
        if (got.length >= wanted) arrived();
      },
      // closeAll at the end of a test resets what is still open.
      reset: () => {},
      close: setClosed,
    }),
  );
  return {
    status,
    echo: (text) => {
      wanted = got.length + text.length;
      const echoed = new Promise<string>((resolve) => {
        arrived = () => resolve(got.slice(-text.length));
      });
      stream.write(Buffer.from(text));
      return within(echoed, 2000, `echo of ${text}`);
    },
    end: () => {
      stream.end();
      return within(closed, 2000, "stream close");
    },
  };
}

function sessionOf(stream: H2Stream): H2Session {
  return stream.owner as H2Session;
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(5);
  }
}

/** The server's finished handshakes once it has at least `n` (its side finishes after the client's). */
async function handshakes(server: HboneServer, n: number): Promise<number> {
  await until(() => server.handshakes >= n, 2000, `${n} server handshakes`);
  return server.handshakes;
}

interface World extends LeakChecked {
  observer: RecordingObserver;
  /** The pool's TLS context per SPIFFE ID, read on every open: edit it to rotate or take a certificate away. */
  contexts: Map<string, TlsContext>;
  /** An HBONE server for this test; closed after it. */
  server(w: Issued, mode?: "h2" | "raw", settings?: Partial<LocalSettings>): HboneServer;
  /** Where the pool's dials go on loopback, whatever pod address they are for. */
  target: PodDial;
  /** Every dial the pool asked for, and the fd it got. */
  dials: PodDial[];
  fds: number[];
  /** Called as each dial is made (its connect in progress). */
  onDial: () => void;
  /** A pool on the test's context; closed (closeAll) after the test. */
  pool(tuning?: Partial<HboneTuning>): HbonePool;
}

/** Runs `body` leak-checked: the pools and servers, once closed, released every fd, SSL object and handler. */
function leakChecked(t: ExecutionContext, body: (w: World) => Promise<void>): Promise<void> {
  return runLeakChecked(
    t,
    (base) => {
      const servers: HboneServer[] = [];
      const pools: HbonePool[] = [];
      const observer = new RecordingObserver();
      const target: PodDial = { address: "127.0.0.1", port: 1 };
      const loopback = loopbackSockets(() => target);
      const fds: number[] = [];
      const world: World = {
        ...base,
        observer,
        contexts: new Map(),
        server: (w, mode, settings) => {
          const s = hboneServer(base.reactor, base.context(w), mode, settings);
          servers.push(s);
          return s;
        },
        target,
        dials: loopback.dials,
        fds,
        onDial: () => {},
        pool: (tuning) => {
          const ctx = testContext(base.reactor, {
            tuning: { handshakeTimeoutMs: 5000, ...tuning },
            observer,
            tlsContexts: world.contexts,
            sockets: (from, dst) => {
              const made = loopback.factory(from, dst);
              fds.push(made.fd);
              world.onDial();
              return made;
            },
          });
          const pool = new HbonePool(ctx);
          pools.push(pool);
          return pool;
        },
      };
      const release = () => {
        for (const p of pools) p.closeAll();
        for (const s of servers) s.close();
      };
      return { world, release };
    },
    body,
  );
}

/** A pool opening with cart's certificate, every dial of it reaching an h2 server with db's. */
function poolToDb(w: World, tuning?: Partial<HboneTuning>): { db: HboneServer; pool: HbonePool } {
  const db = w.server(w.db);
  w.target.port = db.port;
  w.contexts.set(CART, w.context(w.cart));
  return { db, pool: w.pool(tuning) };
}

test.serial("concurrent opens share one session and one handshake; another IP or identity gets its own", (t) =>
  leakChecked(t, async (w) => {
    const db = w.server(w.db);
    const cart = w.server(w.cart);
    w.contexts.set(CART, w.context(w.cart));
    w.target.port = db.port;
    const pool = w.pool({ peerTimeoutMs: 9000 });

    const [a, b] = await within(
      Promise.all([
        pool.open(web1, db1, "10.0.1.1", 8080, []),
        pool.open(web1, db1, "10.0.1.1", 9090, [["baggage", "k8s.pod.name=web-1"]]),
      ]),
      5000,
      "two opens",
    );
    t.is(sessionOf(a), sessionOf(b), "one session");
    t.is(pool.size, 1);
    t.is(await handshakes(db, 1), 1);
    t.deepEqual(w.observer.results("client"), ["ok"]);
    t.deepEqual(w.dials, [{ address: "10.0.1.1", port: HBONE_PORT }], "one dial, to the pod's HBONE port");
    const ca = client(a);
    const cb = client(b);
    t.is(await ca.status, "200");
    t.is(await cb.status, "200");
    t.is(await ca.echo("ping"), "ping");
    t.is(await cb.echo("pong"), "pong");
    t.deepEqual([...db.authorities].sort(), ["10.0.1.1:8080", "10.0.1.1:9090"]);
    // A vanished peer is noticed within peerTimeoutMs: keepalive a third of it apart, unacknowledged data bounded.
    const fd = w.fds[0] as number;
    t.is(getsockoptInt(fd, SOL_SOCKET, SO_KEEPALIVE), 1);
    t.is(getsockoptInt(fd, IPPROTO_TCP, TCP_KEEPIDLE), 3);
    t.is(getsockoptInt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT), 9000);

    // Another IP of the same identity: a session of its own.
    const c = await within(pool.open(web1, db2, "10.0.1.2", 8080, []), 5000, "open to db-2");
    t.not(sessionOf(c), sessionOf(a));
    t.is(pool.size, 2);
    t.is(await handshakes(db, 2), 2);

    // The IP now belongs to a cart pod: a session verified for db must not carry its traffic.
    w.target.port = cart.port;
    const cart1 = meshWorkload("cart-1", "cart", "10.0.1.1");
    const d = await within(pool.open(web1, cart1, "10.0.1.1", 8080, []), 5000, "open to cart-1");
    t.not(sessionOf(d), sessionOf(a));
    t.is(await handshakes(cart, 1), 1);
    t.is(pool.size, 3);
    t.is(await client(d).echo("cart"), "cart");
    // ... while db's session at that IP is still the one for db.
    const e = await within(pool.open(web1, db1, "10.0.1.1", 8080, []), 5000, "open to db-1 again");
    t.is(sessionOf(e), sessionOf(a));
    t.is(w.dials.length, 3);
    t.deepEqual(w.observer.results("client"), ["ok", "ok", "ok"]);
  }),
);

test.serial("a peer with another identity or CA is refused after its handshake, before a byte of the app", (t) =>
  leakChecked(t, async (w) => {
    w.contexts.set(CART, w.context(w.cart));
    const pool = w.pool();

    // db expected at the IP, cart answers.
    const impostor = w.server(w.cart, "raw");
    w.target.port = impostor.port;
    const err = await t.throwsAsync(within(pool.open(web1, db1, "10.0.1.1", 8080, []), 5000, "open"), {
      instanceOf: ProxyError,
      code: "hbone_identity_mismatch",
    });
    t.regex(err?.message ?? "", /shop\/db-1/);
    t.deepEqual(await within(impostor.connection(0), 2000, "server end"), { handshake: true, bytes: 0 });

    // cart expected, a "cart" from a CA outside the trust bundle answers: OpenSSL refuses it in the handshake.
    const foreign = w.server(w.foreign, "raw");
    w.target.port = foreign.port;
    const cart1 = meshWorkload("cart-1", "cart", "10.0.1.1");
    await t.throwsAsync(within(pool.open(web1, cart1, "10.0.1.1", 8080, []), 5000, "open"), {
      code: "hbone_unknown_ca",
    });
    t.deepEqual(await within(foreign.connection(0), 2000, "server end"), { handshake: false, bytes: 0 });

    t.deepEqual(w.observer.results("client"), ["identity_mismatch", "unknown_ca"]);
    t.is(pool.size, 0);
  }),
);

test.serial("a source without a valid certificate gets no_identity, before or after the connect", (t) =>
  leakChecked(t, async (w) => {
    const pool = w.pool();
    await t.throwsAsync(pool.open(web1, db1, "10.0.1.1", 8080, []), { instanceOf: ProxyError, code: "no_identity" });
    t.deepEqual(w.dials, []);

    // The certificate is withdrawn while the connect is under way: no handshake with what is no longer valid.
    const db = w.server(w.db);
    w.target.port = db.port;
    w.contexts.set(CART, w.context(w.cart));
    w.onDial = () => w.contexts.delete(CART);
    await t.throwsAsync(within(pool.open(web1, db1, "10.0.1.1", 8080, []), 5000, "open"), { code: "no_identity" });
    t.is(w.dials.length, 1);
    t.deepEqual(w.observer.handshakes, []);
    t.is(pool.size, 0);
  }),
);

test.serial("a rotated certificate gets a new session; the old one finishes its streams, then closes", (t) =>
  leakChecked(t, async (w) => {
    const db = w.server(w.db);
    w.target.port = db.port;
    const before = w.context(w.cart);
    w.contexts.set(CART, before);
    const pool = w.pool();
    const a = await within(pool.open(web1, db1, "10.0.1.1", 8080, []), 5000, "open");
    const ca = client(a);
    t.is(await ca.echo("before"), "before");

    // The rotation builds the new context, then disposes the old one: live connections keep theirs.
    w.contexts.set(CART, w.context(w.cart));
    before.dispose();
    const b = await within(pool.open(web1, db1, "10.0.1.1", 8080, []), 5000, "open after rotation");
    const old = sessionOf(a);
    t.not(sessionOf(b), old);
    t.is(pool.size, 1);
    t.is(await handshakes(db, 2), 2);
    t.false(old.canRequest, "the old session takes no new stream");
    t.is(await ca.echo("after"), "after", "its stream still carries");
    const oldClosed = closeOf(old);
    await ca.end();
    t.is(await within(oldClosed, 2000, "old session close"), undefined, "closed cleanly once drained");
    t.false(sessionOf(b).destroyed);
    t.is(await client(b).echo("new"), "new");
  }),
);

test.serial("a session leaves the pool once idle for poolIdleMs, never while it carries a stream", (t) =>
  leakChecked(t, async (w) => {
    const { db, pool } = poolToDb(w, { poolIdleMs: 100 });
    const a = await within(pool.open(web1, db1, "10.0.1.1", 8080, []), 5000, "open");
    const ca = client(a);
    t.is(await ca.echo("x"), "x");
    await sleep(300);
    t.is(pool.size, 1, "a stream is open: not idle");
    t.false(sessionOf(a).destroyed);

    const closed = closeOf(sessionOf(a));
    await ca.end();
    const idleFrom = Date.now();
    await within(closed, 2000, "idle close");
    t.true(Date.now() - idleFrom >= 90, "not before poolIdleMs");
    t.is(pool.size, 0);
    const b = await within(pool.open(web1, db1, "10.0.1.1", 8080, []), 5000, "open after expiry");
    t.is(await client(b).echo("y"), "y");
    t.is(await handshakes(db, 2), 2);
  }),
);

test.serial(
  "two opens racing for a session's last stream: one takes it, the other gets a new session, none is refused",
  (t) =>
    leakChecked(t, async (w) => {
      const db = w.server(w.db, "h2", { maxConcurrentStreams: 2 });
      w.target.port = db.port;
      w.contexts.set(CART, w.context(w.cart));
      const pool = w.pool();
      const a = await within(pool.open(web1, db1, "10.0.1.1", 8080, []), 5000, "first open");
      // Answered: the server's SETTINGS (two streams at most) came before.
      t.is(await client(a).status, "200");
      const [b, c] = await within(
        Promise.all([pool.open(web1, db1, "10.0.1.1", 8081, []), pool.open(web1, db1, "10.0.1.1", 8082, [])]),
        5000,
        "two opens at once",
      );
      t.is(sessionOf(b), sessionOf(a), "the second stream of the first session");
      t.not(sessionOf(c), sessionOf(a), "a new session for the third");
      t.is(await client(b).status, "200");
      t.is(await client(c).status, "200");
      t.is(await handshakes(db, 2), 2);
    }),
);

test.serial("a peer's GOAWAY or close takes the session out of the pool", (t) =>
  leakChecked(t, async (w) => {
    const { db, pool } = poolToDb(w);
    const a = await within(pool.open(web1, db1, "10.0.1.1", 8080, []), 5000, "open");
    const ca = client(a);
    t.is(await ca.echo("x"), "x");

    (db.sessions[0] as H2Session).close();
    await until(() => pool.size === 0, 2000, "forgotten on GOAWAY");
    t.is(await ca.echo("still"), "still", "the stream it carries goes on");
    const b = await within(pool.open(web1, db1, "10.0.1.1", 8080, []), 5000, "open after GOAWAY");
    t.not(sessionOf(b), sessionOf(a));
    t.is(pool.size, 1);
    await ca.end();

    (db.sessions[1] as H2Session).destroy();
    await until(() => pool.size === 0, 2000, "forgotten on close");
    t.true(sessionOf(b).destroyed);
    t.is(await handshakes(db, 2), 2);
  }),
);

test.serial("closeSource drains only that pod's sessions", (t) =>
  leakChecked(t, async (w) => {
    const { pool } = poolToDb(w);
    // web-1 is a prefix of web-10's key: only the key up to its separator counts.
    const a1 = await within(pool.open(web1, db1, "10.0.1.1", 8080, []), 5000, "open web-1");
    const a10 = await within(pool.open(web10, db1, "10.0.1.1", 8080, []), 5000, "open web-10");
    t.not(sessionOf(a1), sessionOf(a10));
    t.is(pool.size, 2);
    const c1 = client(a1);
    const closed1 = closeOf(sessionOf(a1));

    pool.closeSource(web1.key);
    t.is(pool.size, 1);
    await until(() => !sessionOf(a1).canRequest, 2000, "web-1's session refuses new streams");
    t.true(sessionOf(a10).canRequest);
    t.is(await c1.echo("draining"), "draining");
    await c1.end();
    t.is(await within(closed1, 2000, "web-1's session close"), undefined);
    t.false(sessionOf(a10).destroyed);
    t.is(await client(a10).echo("web-10"), "web-10");
  }),
);

test.serial("an unreachable destination is hbone_connect_failed, no handshake counted", (t) =>
  leakChecked(t, async (w) => {
    w.contexts.set(CART, w.context(w.cart));
    const pool = w.pool();
    // Refused after the connect started (loopback answers a SYN to a closed port with RST).
    const probe = openListenerFd({ address: "127.0.0.1", port: 0 });
    w.target.port = localPort(probe);
    closeFd(probe);
    await t.throwsAsync(within(pool.open(web1, db1, "10.0.1.1", 8080, []), 5000, "open"), {
      instanceOf: ProxyError,
      code: "hbone_connect_failed",
      message: /ECONNREFUSED/,
    });
    // Failed at once: no TCP connection to a broadcast address.
    w.target.address = "255.255.255.255";
    await t.throwsAsync(within(pool.open(web1, db1, "10.0.1.1", 8080, []), 5000, "open"), {
      code: "hbone_connect_failed",
      message: /ENETUNREACH/,
    });
    t.deepEqual(w.observer.handshakes, []);
    t.is(pool.size, 0);
  }),
);

test.serial("a peer that never answers the handshake is dropped within handshakeTimeoutMs", (t) =>
  leakChecked(t, async (w) => {
    w.contexts.set(CART, w.context(w.cart));
    const pool = w.pool({ handshakeTimeoutMs: 300 });
    // The kernel completes the connect into the backlog; no one ever accepts, so the ClientHello is never read.
    const silent = openListenerFd({ address: "127.0.0.1", port: 0 });
    try {
      w.target.port = localPort(silent);
      const from = Date.now();
      await t.throwsAsync(within(pool.open(web1, db1, "10.0.1.1", 8080, []), 3000, "open"), {
        instanceOf: ProxyError,
        code: "hbone_timeout",
      });
      const took = Date.now() - from;
      t.true(took >= 290 && took < 1500, `rejected after ${took} ms`);
      t.deepEqual(w.observer.results("client"), ["timeout"]);
      t.is(pool.size, 0);
    } finally {
      closeFd(silent);
    }
  }),
);

test.serial("closeAll drops a handshake under way at once: the open fails, no fd is left, nothing is reported", (t) =>
  leakChecked(t, async (w) => {
    w.contexts.set(CART, w.context(w.cart));
    const pool = w.pool({ handshakeTimeoutMs: 60_000 });
    // Connected into the backlog of a listener that never accepts: the handshake waits for the ServerHello.
    const silent = openListenerFd({ address: "127.0.0.1", port: 0 });
    try {
      w.target.port = localPort(silent);
      const dialled = new Promise<void>((resolve) => {
        w.onDial = resolve;
      });
      const opening = pool.open(web1, db1, "10.0.1.1", 8080, []);
      await within(dialled, 2000, "dial");
      await new Promise((r) => setTimeout(r, 50));
      const from = Date.now();
      pool.closeAll();
      await t.throwsAsync(within(opening, 2000, "open"), { instanceOf: ProxyError });
      t.true(Date.now() - from < 1000, "not held until the handshake timeout");
      t.deepEqual(w.observer.handshakes, [], "our own close is not a peer's failure");
    } finally {
      closeFd(silent);
    }
  }),
);

test.serial("closeAll also ends sessions already taken out of the pool and still draining their streams", (t) =>
  leakChecked(t, async (w) => {
    const { pool } = poolToDb(w);
    const stream = await within(pool.open(web1, db1, "10.0.1.1", 8080, []), 5000, "open");
    const closed = closeOf(sessionOf(stream));
    pool.closeSource(web1.key);
    t.is(pool.size, 0, "out of the pool, draining its open stream");
    t.false(sessionOf(stream).destroyed);
    pool.closeAll();
    await within(closed, 1000, "the draining session's close");
    t.true(sessionOf(stream).destroyed);
  }),
);
