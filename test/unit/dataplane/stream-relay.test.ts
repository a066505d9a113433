import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import test, { type ExecutionContext } from "ava";
import { Listener } from "../../../agent/dataplane/listener.js";
import { Reactor } from "../../../agent/dataplane/reactor.js";
import { COUNTER, WorkerCounters } from "../../../agent/dataplane/shared-counters.js";
import { relayFdStream } from "../../../agent/dataplane/stream-relay.js";
import type { TlsContext } from "../../../agent/dataplane/tls/context.js";
import { ErrorCode } from "../../../agent/h2/constants.js";
import { H2Error } from "../../../agent/h2/errors.js";
import type { HeaderList } from "../../../agent/h2/hpack.js";
import type { H2Stream } from "../../../agent/h2/stream.js";
import type { RelayResult } from "../../../agent/proxy/observer.js";
import { SyscallError } from "../../../native-bindings/errors.js";
import { openListenerFd } from "../../../native-bindings/sockets.js";
import { assertNoLeak, fdBaseline } from "../../support/fd-leak.js";
import { within } from "../../support/within.js";
import { closeError, hashAll, readAll, sendMiB as sendMiBToSocket } from "./support/relay.js";
import {
  connectRequest,
  echo,
  handlers,
  hashReceived,
  type SessionPair,
  sendMiB,
  sessionPair,
} from "./support/tls-sessions.js";
import { contextOf, type Fixture, liveObjects, localPort, workloads } from "./tls-support.js";

/**
 * relayFdStream on one Reactor: an app (a Node socket on loopback) whose accepted fd the relay owns, relayed into
 * a CONNECT stream of a real H2Session over TlsTransport; the far end of the stream is driven by each test.
 */

const MiB = 1024 * 1024;
/** The stream window both sessions grant (support/tls-sessions.ts SETTINGS). */
const WINDOW = 4 * MiB;

/** Polls `ready` every 10 ms until true; false after `ms`. */
async function until(ready: () => boolean, ms = 10_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!ready()) {
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

interface World extends Fixture {
  reactor: Reactor;
  context(): { server: TlsContext; client: TlsContext };
  /** The test's app sockets, destroyed afterwards whatever happened (a failed assertion ends the test at once). */
  apps: net.Socket[];
}

/** Runs `body` on a Reactor of its own; afterwards every fd, SSL object and reactor slot it used is released. */
async function leakChecked(t: ExecutionContext, body: (w: World) => Promise<void>): Promise<void> {
  const f = await workloads();
  const baseline = fdBaseline();
  const reactor = new Reactor();
  const serving = fdBaseline();
  const contexts: TlsContext[] = [];
  const apps: net.Socket[] = [];
  const context = () => {
    const made = { server: contextOf(f.db), client: contextOf(f.cart) };
    contexts.push(made.server, made.client);
    return made;
  };
  try {
    await body({ ...f, reactor, context, apps });
    await assertNoLeak(t, serving, () => liveObjects().connections + reactor.size);
  } finally {
    for (const app of apps) app.destroy();
    for (const c of contexts) c.dispose();
    await reactor.close();
  }
  await assertNoLeak(t, baseline);
}

/** An app connection on loopback: the Node socket (the app) and the accepted non-blocking fd (the relay's). */
async function appConnection(w: World): Promise<{ app: net.Socket; fd: number }> {
  const lfd = openListenerFd({ address: "127.0.0.1", port: 0 });
  let listener: Listener | undefined;
  const accepted = new Promise<number>((resolve) => {
    listener = new Listener(w.reactor, lfd, WorkerCounters.standalone(), resolve);
  });
  const app = net.connect({ host: "127.0.0.1", port: localPort(lfd), allowHalfOpen: true });
  w.apps.push(app);
  const [fd] = await within(Promise.all([accepted, once(app, "connect")]), 5000, "app connection");
  listener?.close();
  return { app, fd };
}

interface Relayed {
  app: net.Socket;
  sessions: SessionPair;
  counters: WorkerCounters;
  /** The relay's onDone result. */
  done: Promise<RelayResult>;
  /** Times onDone ran. */
  calls(): number;
  /** The response headers the relay passed on. */
  headers: Promise<HeaderList>;
}

/**
 * App <-> relay <-> client stream ~ TLS ~ server stream, which `farEnd` drives. `onHeaders` sees the response
 * headers too (the caller's hook, as outbound.ts uses it).
 */
async function relayed(
  w: World,
  farEnd: (stream: H2Stream) => void,
  onHeaders?: (headers: HeaderList, stream: H2Stream) => void,
): Promise<Relayed> {
  const { server, client } = w.context();
  const sessions = await sessionPair(w.reactor, server, client, (stream) => farEnd(stream));
  const { app, fd } = await appConnection(w);
  const counters = WorkerCounters.standalone();
  const stream = connectRequest(sessions.client);
  let calls = 0;
  let resolveDone: (r: RelayResult) => void = () => {};
  let resolveHeaders: (h: HeaderList) => void = () => {};
  const done = new Promise<RelayResult>((resolve) => {
    resolveDone = resolve;
  });
  const headers = new Promise<HeaderList>((resolve) => {
    resolveHeaders = resolve;
  });
  relayFdStream(
    w.reactor,
    counters,
    fd,
    stream,
    (r) => {
      calls++;
      resolveDone(r);
    },
    (h) => {
      resolveHeaders(h);
      onHeaders?.(h, stream);
    },
  );
  return { app, sessions, counters, done, calls: () => calls, headers };
}

/** Waits for onDone, closes the sessions, and checks that onDone ran exactly once. */
async function finish(t: ExecutionContext, r: Relayed): Promise<RelayResult> {
  const result = await within(r.done, 10_000, "onDone");
  r.sessions.client.close();
  await within(Promise.all([r.sessions.clientClosed, r.sessions.serverClosed]), 5000, "sessions closed");
  await sleep(20);
  t.is(r.calls(), 1, "onDone ran exactly once");
  return result;
}

function status(headers: HeaderList): string | undefined {
  return headers.find(([name]) => name === ":status")?.[1];
}

/** Far end: collects what arrives (consumed at once) until END_STREAM. */
function collect(stream: H2Stream): Promise<string> {
  const got: Buffer[] = [];
  return new Promise((resolve) => {
    stream.attach(
      handlers(stream, {
        data: (c) => {
          got.push(Buffer.from(c));
          stream.consumed(c.length);
        },
        end: () => resolve(Buffer.concat(got).toString()),
      }),
    );
  });
}

test.serial("4 MiB each way at once: equal sha256 both ways, byte counts in onDone and the counters", (t) =>
  leakChecked(t, async (w) => {
    const mib = 4;
    let farSent: Promise<string> | undefined;
    let farGot: Promise<{ sha256: string; bytes: number }> | undefined;
    const r = await relayed(w, (stream) => {
      const hashed = hashReceived(stream);
      const sender = sendMiB(stream, mib, randomBytes(MiB));
      stream.attach(handlers(stream, { data: hashed.data, end: hashed.end, drain: sender.drain }));
      stream.respond(200);
      farSent = sender.sha256;
      farGot = hashed.result;
    });
    const appClosed = once(r.app, "close");
    const appGot = hashAll(r.app);
    const appSent = await within(sendMiBToSocket(r.app, mib), 30_000, "the app's 4 MiB written");
    const got = await within(appGot, 30_000, "4 MiB at the app");
    t.is(got.bytes, mib * MiB);
    t.is(got.sha256, String(await farSent));
    const far = await within(farGot ?? Promise.reject(new Error("no far end")), 30_000, "4 MiB at the far end");
    t.is(far.bytes, mib * MiB);
    t.is(far.sha256, appSent);
    await within(appClosed, 5000, "the app's socket closed");
    t.is(status(await r.headers), "200");
    const result = await finish(t, r);
    t.deepEqual(result, { aToB: mib * MiB, bToA: mib * MiB });
    t.is(r.counters.get(COUNTER.stream_sent_bytes), mib * MiB);
    t.is(r.counters.get(COUNTER.stream_received_bytes), mib * MiB);
  }),
);

test.serial("8 relays at once on one session (one shared read buffer): each app gets its own 2 MiB back", (t) =>
  leakChecked(t, async (w) => {
    const { server, client } = w.context();
    const sessions = await sessionPair(w.reactor, server, client, (stream) => echo(stream));
    const counters = WorkerCounters.standalone();
    const results = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const { app, fd } = await appConnection(w);
        const done = new Promise<RelayResult>((resolve) => {
          relayFdStream(w.reactor, counters, fd, connectRequest(sessions.client), resolve);
        });
        const closed = once(app, "close");
        const got = hashAll(app);
        const sent = await within(sendMiBToSocket(app, 2), 30_000, "an app's 2 MiB written");
        const back = await within(got, 30_000, "an app's 2 MiB echoed");
        await within(closed, 5000, "an app's socket closed");
        return { same: back.sha256 === sent && back.bytes === 2 * MiB, result: await within(done, 5000, "onDone") };
      }),
    );
    t.deepEqual(
      results.map((r) => r.same),
      results.map(() => true),
      "every app got exactly its own bytes back",
    );
    for (const { result } of results) t.deepEqual(result, { aToB: 2 * MiB, bToA: 2 * MiB });
    t.is(counters.get(COUNTER.stream_sent_bytes), 16 * MiB);
    sessions.client.close();
    await within(Promise.all([sessions.clientClosed, sessions.serverClosed]), 5000, "sessions closed");
  }),
);

test.serial("half-close from the app: its FIN reaches the far end as END_STREAM, which still answers", (t) =>
  leakChecked(t, async (w) => {
    const r = await relayed(w, (stream) => {
      collect(stream).then((said) => {
        stream.write(Buffer.from(`you said ${said}`));
        stream.end();
      });
      stream.respond(200);
    });
    const closed = once(r.app, "close");
    const answer = readAll(r.app);
    r.app.end("hello");
    t.is((await within(answer, 5000, "the answer")).toString(), "you said hello");
    await within(closed, 5000, "the app's socket closed");
    t.deepEqual(await finish(t, r), { aToB: 5, bToA: 14 });
  }),
);

test.serial("half-close from the far end: END_STREAM reaches the app as a FIN, and the app still sends", (t) =>
  leakChecked(t, async (w) => {
    let heard: Promise<string> | undefined;
    const r = await relayed(w, (stream) => {
      heard = collect(stream);
      stream.respond(200);
      stream.write(Buffer.from("bye first"));
      stream.end();
    });
    const closed = once(r.app, "close");
    t.is((await within(readAll(r.app), 5000, "the far end's bytes and FIN")).toString(), "bye first");
    r.app.end("still here");
    await within(closed, 5000, "the app's socket closed");
    t.is(await within(heard ?? Promise.reject(new Error("no far end")), 5000, "the far end's data"), "still here");
    t.deepEqual(await finish(t, r), { aToB: 10, bToA: 9 });
  }),
);

test.serial("an app reset reaches the far end as a stream reset (CANCEL); onDone has the socket's error", (t) =>
  leakChecked(t, async (w) => {
    let resetCode: number | undefined;
    let farReset: () => void = () => {};
    const farResetSeen = new Promise<void>((resolve) => {
      farReset = resolve;
    });
    const r = await relayed(w, (stream) => {
      stream.attach(
        handlers(stream, {
          reset: (code) => {
            resetCode = code;
            farReset();
          },
        }),
      );
      stream.respond(200);
      stream.write(Buffer.from("ready"));
    });
    await within(once(r.app, "data"), 5000, "the far end's first bytes");
    r.app.resetAndDestroy();
    await within(farResetSeen, 5000, "the far end's stream reset");
    t.is(resetCode, ErrorCode.CANCEL);
    const result = await finish(t, r);
    t.true(result.error instanceof SyscallError, String(result.error));
    t.is((result.error as SyscallError).code, "ECONNRESET");
  }),
);

test.serial("a far-end stream reset reaches the app as ECONNRESET; onDone has the H2Error", (t) =>
  leakChecked(t, async (w) => {
    const r = await relayed(w, (stream) => {
      stream.attach(handlers(stream, { data: () => stream.reset(ErrorCode.CONNECT_ERROR) }));
      stream.respond(200);
    });
    const error = closeError(r.app);
    r.app.write("reset me");
    t.is((await error)?.code, "ECONNRESET");
    const result = await finish(t, r);
    t.true(result.error instanceof H2Error, String(result.error));
    t.is((result.error as H2Error).h2code, ErrorCode.CONNECT_ERROR);
    t.is(result.aToB, 8);
  }),
);

test.serial("the caller resetting the stream (a refused CONNECT) resets the app", (t) =>
  leakChecked(t, async (w) => {
    let farCode: number | undefined;
    const r = await relayed(
      w,
      (stream) => {
        stream.attach(
          handlers(stream, {
            reset: (code) => {
              farCode = code;
            },
          }),
        );
        stream.respond(503);
      },
      (headers, stream) => {
        if (status(headers) !== "200") stream.reset();
      },
    );
    t.is((await closeError(r.app))?.code, "ECONNRESET");
    const result = await finish(t, r);
    t.is(result.error, undefined, "the caller knows why it reset");
    t.is(farCode, ErrorCode.CANCEL);
  }),
);

test.serial("a relay that cannot watch its fd (reactor closed) closes it, resets the stream, and is done", (t) =>
  leakChecked(t, async (w) => {
    let farCode: number | undefined;
    const { server, client } = w.context();
    const sessions = await sessionPair(w.reactor, server, client, (stream) => {
      stream.attach(
        handlers(stream, {
          reset: (code) => {
            farCode = code;
          },
        }),
      );
      stream.respond(200);
    });
    const { app, fd } = await appConnection(w);
    const closed = new Reactor();
    await closed.close();
    const results: RelayResult[] = [];
    relayFdStream(closed, WorkerCounters.standalone(), fd, connectRequest(sessions.client), (r) => results.push(r));
    t.is(results.length, 1, "onDone at once");
    t.is((results[0]?.error as { code?: string } | undefined)?.code, "reactor_closed");
    t.is((await closeError(app))?.code, "ECONNRESET");
    t.true(await until(() => farCode !== undefined), "the far end saw the reset");
    t.is(farCode, ErrorCode.CANCEL);
    sessions.client.close();
    await within(Promise.all([sessions.clientClosed, sessions.serverClosed]), 5000, "sessions closed");
    t.is(results.length, 1, "onDone ran exactly once");
  }),
);

interface StalledFarEnd {
  /** Bytes the far end received so far. */
  readonly received: number;
  /** Resolves as the relay's direction ends at the far end. */
  readonly ended: Promise<void>;
  /** Answers `stream` with 200 and holds what it receives; `onEnd` runs as its direction ends. */
  take(stream: H2Stream, onEnd?: () => void): void;
  /** Consumes what it held and every byte from now on. */
  read(): void;
}

/** A far end that does not read at first: the bytes it receives stay unconsumed, so the stream's window fills. */
function stalledFarEnd(onData: (chunk: Uint8Array) => void = () => {}): StalledFarEnd {
  let received = 0;
  let unconsumed = 0;
  let reading = false;
  let farStream: H2Stream | undefined;
  let farDone: () => void = () => {};
  const ended = new Promise<void>((resolve) => {
    farDone = resolve;
  });
  return {
    get received() {
      return received;
    },
    ended,
    take(stream, onEnd) {
      farStream = stream;
      stream.attach(
        handlers(stream, {
          data: (c) => {
            onData(c);
            received += c.length;
            if (reading) stream.consumed(c.length);
            else unconsumed += c.length;
          },
          end: () => {
            farDone();
            onEnd?.();
          },
        }),
      );
      stream.respond(200);
    },
    read() {
      reading = true;
      farStream?.consumed(unconsumed);
    },
  };
}

test.serial("a far end that does not read: the relay stops reading the app, then delivers every byte", (t) =>
  leakChecked(t, async (w) => {
    const mib = 8;
    const hash = createHash("sha256");
    const far = stalledFarEnd((c) => hash.update(c));
    const farGot = far.ended.then(() => hash.digest("hex"));
    const r = await relayed(w, (stream) => far.take(stream, () => stream.end()));
    const appClosed = once(r.app, "close");
    r.app.resume();
    const appSent = sendMiBToSocket(r.app, mib);
    t.true(await until(() => far.received === WINDOW), "the far end got a window's worth");
    const sent = r.counters.get(COUNTER.stream_sent_bytes);
    const wakeups = w.reactor.stats.wakeups;
    await sleep(300);
    t.is(r.counters.get(COUNTER.stream_sent_bytes), sent, "nothing read from the app while the stream is full");
    t.true(sent - WINDOW <= 64 * 1024, `the stream holds at most one read past its window (${sent - WINDOW})`);
    t.true(sent < mib * MiB, "bytes wait in the app's socket");
    t.true(w.reactor.stats.wakeups - wakeups < 10, "the loop sleeps meanwhile");
    far.read();
    const sha256 = await within(appSent, 30_000, "the app's writes");
    t.is(await within(farGot, 30_000, "every byte at the far end"), sha256);
    t.is(far.received, mib * MiB);
    await within(appClosed, 5000, "the app's socket closed");
    t.deepEqual(await finish(t, r), { aToB: mib * MiB, bToA: 0 });
  }),
);

test.serial("an app that hangs up while the stream is full is not polled in a loop; its bytes still arrive", (t) =>
  leakChecked(t, async (w) => {
    const far = stalledFarEnd();
    const r = await relayed(w, (stream) => {
      far.take(stream);
      // The far end's direction ends first: the app's FIN below then hangs its socket up both ways.
      stream.end();
    });
    const appClosed = once(r.app, "close");
    r.app.resume();
    // A little past the window: the relay stops reading with the rest (and the FIN) in the kernel.
    const total = WINDOW + 16 * 1024;
    r.app.end(randomBytes(total));
    t.true(await until(() => far.received === WINDOW && r.app.writableLength === 0), "window full, app's bytes sent");
    await sleep(50);
    const wakeups = w.reactor.stats.wakeups;
    await sleep(300);
    t.true(w.reactor.stats.wakeups - wakeups < 10, "the hung-up socket does not wake the loop while unread");
    far.read();
    await within(far.ended, 5000, "the app's FIN at the far end");
    t.is(far.received, total);
    await within(appClosed, 5000, "the app's socket closed");
    t.deepEqual(await finish(t, r), { aToB: total, bToA: 0 });
  }),
);

test.serial("an app that does not read: the far end's window closes, held bytes stay within it, all arrive", (t) =>
  leakChecked(t, async (w) => {
    const mib = 24;
    const chunk = randomBytes(MiB);
    let farStream: H2Stream | undefined;
    let sender: ReturnType<typeof sendMiB> | undefined;
    const r = await relayed(w, (stream) => {
      farStream = stream;
      sender = sendMiB(stream, mib, chunk);
      stream.attach(handlers(stream, { drain: sender.drain }));
      stream.respond(200);
    });
    r.app.pause();
    const appClosed = once(r.app, "close");
    // Bytes the far end's session framed and sent: what it was given less what waits in its stream's outbox.
    const framed = () => (sender?.written() ?? 0) - (farStream?.outboxBytes ?? 0);
    // Stalled: nothing more framed for 300 ms. A single 10 ms poll without progress is no stall on a loaded machine
    // (load average 10: the far end's next write came later, and the assertion below failed by 2 MiB).
    let last = -1;
    let since = Date.now();
    t.true(
      await until(() => {
        const now = framed();
        if (now !== last) {
          last = now;
          since = Date.now();
        }
        return now > 0 && Date.now() - since >= 300;
      }),
      "the far end stalls",
    );
    await sleep(300);
    t.is(framed(), last, "the far end sends nothing more while the app does not read");
    const accepted = r.counters.get(COUNTER.stream_received_bytes);
    t.true(framed() < mib * MiB, "the far end is held back");
    t.true(framed() - accepted <= WINDOW, `the relay holds at most a window (${framed() - accepted} bytes)`);
    const appGot = hashAll(r.app);
    r.app.resume();
    const got = await within(appGot, 30_000, "every byte at the app");
    t.is(got.bytes, mib * MiB);
    t.is(got.sha256, String(await sender?.sha256));
    r.app.end();
    await within(appClosed, 5000, "the app's socket closed");
    t.deepEqual(await finish(t, r), { aToB: 0, bToA: mib * MiB });
    t.is(r.counters.get(COUNTER.stream_received_bytes), mib * MiB);
  }),
);
