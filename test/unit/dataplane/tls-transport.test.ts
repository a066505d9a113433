import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { Worker } from "node:worker_threads";
import test, { type ExecutionContext } from "ava";
import { checkHbonePeer } from "../../../agent/dataplane/hbone-peer.js";
import { Listener } from "../../../agent/dataplane/listener.js";
import { WorkerCounters } from "../../../agent/dataplane/shared-counters.js";
import { RECORD_BYTES, TLS_EOF, TlsConnection } from "../../../agent/dataplane/tls/connection.js";
import { TlsError } from "../../../agent/dataplane/tls/errors.js";
import { TlsTransport } from "../../../agent/dataplane/tls-transport.js";
import { H2Session } from "../../../agent/h2/session.js";
import type { H2Stream } from "../../../agent/h2/stream.js";
import { accept, closeFd, SOL_SOCKET, setIntOption, setLingerZero } from "../../../native-bindings/io.js";
import { SO_SNDBUF } from "../../../native-bindings/libc.js";
import { openListenerFd } from "../../../native-bindings/sockets.js";
import { assertNoLeak, fdBaseline } from "../../support/fd-leak.js";
import { handlers } from "../../support/h2-handlers.js";
import { within } from "../../support/within.js";
import { sid } from "../identity/helpers.js";
import { type LeakChecked, runLeakChecked } from "./support/leak-checked.js";
import {
  closeOf,
  connectRequest,
  dial,
  echo,
  handshakePair,
  hashReceived,
  sendMiB,
  sessionPair,
} from "./support/tls-sessions.js";
import { liveObjects, localPort, pollUntil, threadWrites, workloads } from "./tls-support.js";

/** HBONE's transport on the loop: H2Sessions over TlsTransports on a Reactor, real loopback TCP, real mTLS. */

/** Runs `body` leak-checked: the transports released every fd, SSL object and reactor handler they owned. */
function leakChecked(t: ExecutionContext, body: (w: LeakChecked) => Promise<void>): Promise<void> {
  return runLeakChecked(t, (world) => ({ world }), body);
}

test.serial("CONNECT over mTLS on the loop: 200, echo both ways, both identities, graceful close", (t) =>
  leakChecked(t, async ({ reactor, context, db, cart }) => {
    let authority = "";
    const rig = await sessionPair(reactor, context(db), context(cart), (stream, headers) => {
      authority = headers.find(([n]) => n === ":authority")?.[1] ?? "";
      echo(stream);
    });
    t.deepEqual(checkHbonePeer(rig.clientT.peer, rig.clientT.alpn, sid("shop", "db")), {
      ok: true,
      id: sid("shop", "db"),
    });
    t.like(checkHbonePeer(rig.clientT.peer, rig.clientT.alpn, sid("shop", "payments")), {
      ok: false,
      reason: "identity_mismatch",
    });
    t.deepEqual(checkHbonePeer(rig.serverT.peer, rig.serverT.alpn), { ok: true, id: sid("shop", "cart") });
    t.is(rig.serverT.alpn, "h2");

    const stream = connectRequest(rig.client, "10.1.2.3:8080");
    const received: Buffer[] = [];
    let status = "";
    let got = 0;
    let want = 0;
    let arrived: () => void = () => {};
    const closed = new Promise<void>((resolve) => {
      stream.attach(
        handlers(stream, {
          headers: (h) => {
            status = h.find(([n]) => n === ":status")?.[1] ?? "";
          },
          data: (c) => {
            // A view of the shared read buffer: copied to be kept.
            received.push(Buffer.from(c));
            got += c.length;
            stream.consumed(c.length);
            if (got === want) arrived();
          },
          close: resolve,
        }),
      );
    });
    // Round trips of growing size: one byte, a frame, several records, several frames and windows' worth.
    const sent: Buffer[] = [];
    for (const size of [1, 100, 16 * 1024, 100_000, 5 * 1024 * 1024]) {
      const message = randomBytes(size);
      sent.push(message);
      want += size;
      const echoed = new Promise<void>((resolve) => {
        arrived = resolve;
      });
      stream.write(message);
      await echoed;
    }
    stream.end();
    await closed;
    t.is(status, "200");
    t.is(authority, "10.1.2.3:8080");
    t.true(Buffer.concat(received).equals(Buffer.concat(sent)), "every byte came back, in order");

    rig.client.close();
    t.deepEqual(await Promise.all([rig.clientClosed, rig.serverClosed]), [undefined, undefined]);
    t.true(rig.clientT.destroyed && rig.serverT.destroyed);
    t.is(rig.clientT.queuedBytes, 0);
  }),
);

test.serial("64 MiB each way on one stream at once, sha256 equal both ways, through WANT_WRITE and flow control", (t) =>
  leakChecked(t, async ({ reactor, context, db, cart }) => {
    const mib = 64;
    const chunk = randomBytes(1024 * 1024);
    let serverSent: Promise<string> | undefined;
    let serverGot: Promise<{ sha256: string; bytes: number }> | undefined;
    const rig = await sessionPair(reactor, context(db), context(cart), (stream) => {
      const hashed = hashReceived(stream);
      const sender = sendMiB(stream, mib, chunk);
      stream.attach(handlers(stream, { data: hashed.data, end: hashed.end, drain: sender.drain }));
      stream.respond(200);
      serverSent = sender.sha256;
      serverGot = hashed.result;
    });
    const stream = connectRequest(rig.client);
    const hashed = hashReceived(stream);
    const sender = sendMiB(stream, mib, chunk);
    const closed = new Promise<void>((resolve) => {
      stream.attach(handlers(stream, { data: hashed.data, end: hashed.end, drain: sender.drain, close: resolve }));
    });
    const clientSent = await within(sender.sha256, 60_000, "64 MiB handed to the client's stream");
    const clientGot = await within(hashed.result, 60_000, "64 MiB back at the client");
    await within(closed, 10_000, "the stream's close");
    t.is(clientGot.bytes, mib * 1024 * 1024);
    t.is(clientGot.sha256, String(await serverSent));
    const upstream = await serverGot;
    t.is(upstream?.bytes, mib * 1024 * 1024);
    t.is(upstream?.sha256, clientSent);
    t.true(
      rig.clientT.writeWaits + rig.serverT.writeWaits > 0,
      "some writes found the socket full and waited for EPOLLOUT",
    );
    rig.client.close();
    t.deepEqual(await Promise.all([rig.clientClosed, rig.serverClosed]), [undefined, undefined]);
  }),
);

test.serial("16 MiB up one stream: under a sixth as many write(2) as TLS records, both ends counted", (t) =>
  leakChecked(t, async ({ reactor, context, db, cart }) => {
    const mib = 16;
    let serverGot: Promise<{ sha256: string; bytes: number }> | undefined;
    const rig = await sessionPair(reactor, context(db), context(cart), (stream) => {
      const hashed = hashReceived(stream);
      const end = () => {
        hashed.end();
        stream.end();
      };
      stream.attach(handlers(stream, { data: hashed.data, end }));
      stream.respond(200);
      serverGot = hashed.result;
    });
    const stream = connectRequest(rig.client);
    let drain = () => {};
    const answered = new Promise<void>((resolve) => {
      stream.attach(handlers(stream, { headers: () => resolve(), drain: () => drain() }));
    });
    await within(answered, 5000, "the CONNECT's answer");
    // Both sessions run on this thread's loop: its write(2) count holds the sender's records and the receiver's
    // WINDOW_UPDATEs alike.
    const before = threadWrites();
    const sender = sendMiB(stream, mib, randomBytes(1024 * 1024));
    drain = sender.drain;
    const sent = await within(sender.sha256, 30_000, "16 MiB handed to the stream");
    const got = await within(serverGot as Promise<{ sha256: string; bytes: number }>, 30_000, "16 MiB at the server");
    const calls = threadWrites().calls - before.calls;
    t.is(got.sha256, sent);
    const records = (mib * 1024 * 1024) / RECORD_BYTES;
    // About 80 here: the session's 64 KiB batches of a turn leave together. Each batch on its own was about 265,
    // each record on its own over 1,100.
    t.true(calls * 6 < records, `${calls} write(2) for ${records} records`);
    rig.client.close();
    t.deepEqual(await Promise.all([rig.clientClosed, rig.serverClosed]), [undefined, undefined]);
  }),
);

test.serial(
  "a slow reader behind small socket buffers: held ciphertext goes on EPOLLOUT, then close_notify; every byte in order",
  (t) =>
    leakChecked(t, async ({ reactor, context, db, cart }) => {
      const lfd = openListenerFd({ address: "127.0.0.1", port: 0 });
      let listener: Listener | undefined;
      const accepted = new Promise<number>((resolve) => {
        listener = new Listener(reactor, lfd, WorkerCounters.standalone(), resolve);
      });
      const cfd = dial(localPort(lfd));
      // 32 KiB once the kernel doubled it: a write of 16 records is cut short every time.
      setIntOption(cfd, SOL_SOCKET, SO_SNDBUF, 16 * 1024);
      const client = TlsTransport.open({
        reactor,
        context: context(cart),
        fd: cfd,
        role: "client",
        handshakeTimeoutMs: 5000,
      });
      const sfd = await accepted;
      listener?.close();
      // The reader: OpenSSL over the fd, polled every millisecond for 4 KiB at most.
      const reader = new TlsConnection(context(db), sfd, "server");
      let opened: TlsTransport | undefined;
      try {
        await pollUntil(() => (reader.handshake() === "done" ? true : undefined));
        const clientT = await client;
        opened = clientT;
        const heard: string[] = [];
        const closed = new Promise<void>((resolve) =>
          clientT.start({
            receive: () => {},
            drained: () => pump(),
            ended: () => heard.push("ended"),
            errored: (err) => heard.push(`errored ${err.message}`),
            closed: () => resolve(),
          }),
        );
        const data = randomBytes(2 * 1024 * 1024 + 777);
        // Chunks of many sizes, so records and writes start in the middle of chunks.
        const sizes = [1, 9, 100, 16 * 1024, 70_000, 5000, 300_000, 16 * 1024 - 1];
        let sent = 0;
        let k = 0;
        const pump = () => {
          while (sent < data.length) {
            const n = Math.min(sizes[k++ % sizes.length] as number, data.length - sent);
            const more = clientT.write([data.subarray(sent, sent + n)], n);
            sent += n;
            if (!more) return;
          }
          clientT.end();
        };
        pump();
        const buf = Buffer.alloc(4096);
        const got: Buffer[] = [];
        const end = await pollUntil(() => {
          const n = reader.read(buf);
          if (n > 0) got.push(Buffer.from(buf.subarray(0, n)));
          return n === TLS_EOF || n < -2 ? n : undefined;
        }, 20_000);
        t.is(end, TLS_EOF, "close_notify came after the last byte");
        t.true(Buffer.concat(got).equals(data), "every byte, in order");
        t.true(clientT.writeWaits > 0, "the sender waited for EPOLLOUT");
        // Our end closes with a bare FIN: the client's session-less transport hears an (unclean) end.
        reader.free();
        closeFd(sfd);
        await within(closed, 5000, "the client's close");
        t.deepEqual(heard, ["ended"]);
      } finally {
        opened?.destroy();
        if (!reader.freed) {
          reader.free();
          closeFd(sfd);
        }
      }
    }),
);

test.serial("1000 short CONNECT streams, 64 at a time, each answered and echoed, on one session", (t) =>
  leakChecked(t, async ({ reactor, context, db, cart }) => {
    const rig = await sessionPair(reactor, context(db), context(cart), (stream) => echo(stream));
    const count = 1000;
    let started = 0;
    let finished = 0;
    const wrong: string[] = [];
    let done: () => void = () => {};
    const all = new Promise<void>((resolve) => {
      done = resolve;
    });
    const open = () => {
      const n = started++;
      const stream: H2Stream = connectRequest(rig.client, `10.0.${n >> 8}.${n & 255}:80`);
      const message = `stream ${n} `.repeat(10);
      let reply = "";
      stream.attach(
        handlers(stream, {
          headers: (h) => {
            if (h.find(([k]) => k === ":status")?.[1] !== "200") wrong.push(`${n}: status`);
            stream.write(Buffer.from(message));
            stream.end();
          },
          data: (c) => {
            reply += c.toString();
            stream.consumed(c.length);
          },
          close: () => {
            if (reply !== message) wrong.push(`${n}: got ${JSON.stringify(reply)}`);
            finished++;
            if (started < count) open();
            else if (finished === count) done();
          },
        }),
      );
    };
    for (let i = 0; i < 64; i++) open();
    await all;
    t.deepEqual(wrong, []);
    t.is(finished, count);
    t.is(rig.client.streamCount, 0);
    t.is(rig.server.streamCount, 0);
    rig.client.close();
    t.deepEqual(await Promise.all([rig.clientClosed, rig.serverClosed]), [undefined, undefined]);
  }),
);

test.serial(
  "the peer resets the TCP connection mid-stream: the session errors with tls_io, streams reset, all released",
  (t) =>
    leakChecked(t, async ({ reactor, context, db, cart }) => {
      let serverStream: H2Stream | undefined;
      let serverBytes = 0;
      let midway: () => void = () => {};
      const halfway = new Promise<void>((resolve) => {
        midway = resolve;
      });
      const rig = await sessionPair(reactor, context(db), context(cart), (stream) => {
        serverStream = stream;
        stream.attach(
          handlers(stream, {
            data: (c) => {
              serverBytes += c.length;
              stream.consumed(c.length);
              if (serverBytes >= 8 * 1024 * 1024) midway();
            },
            reset: () => {},
          }),
        );
        stream.respond(200);
      });
      const stream = connectRequest(rig.client);
      let resetCode: number | undefined;
      const sender = sendMiB(stream, 1024, randomBytes(1024 * 1024));
      stream.attach(
        handlers(stream, {
          drain: sender.drain,
          reset: (code) => {
            resetCode = code;
          },
        }),
      );
      await halfway;
      // The server's socket closes with SO_LINGER 0: the kernel sends a RST, and drops what the client had sent.
      setLingerZero(rig.serverT.fd);
      rig.server.destroy();
      const err = await rig.clientClosed;
      t.true(err instanceof TlsError, `a typed TLS error: ${String(err)}`);
      t.is((err as TlsError).code, "tls_io");
      t.true([104, 32].includes((err as TlsError).errno), `ECONNRESET or EPIPE, got ${(err as TlsError).errno}`);
      t.not(resetCode, undefined, "the client's stream was reset with its session");
      t.true(serverStream?.closed);
      t.true(rig.clientT.destroyed);
      t.is(rig.clientT.queuedBytes, 0, "queued bytes dropped with the connection");
    }),
);

test.serial("records OpenSSL read ahead reach the sink though epoll stays quiet; end() is close_notify + FIN", (t) =>
  leakChecked(t, async ({ reactor, context, db, cart }) => {
    const outcome = await handshakePair(reactor, context(db), context(cart));
    if (outcome.client.status !== "fulfilled" || outcome.server.status !== "fulfilled") return t.fail("handshake");
    const clientT = outcome.client.value;
    const serverT = outcome.server.value;
    const got: Buffer[] = [];
    let bytes = 0;
    const events: string[] = [];
    let arrived: () => void = () => {};
    const all = new Promise<void>((resolve) => {
      arrived = resolve;
    });
    const sink = (name: string) => ({
      receive: (b: Buffer) => {
        got.push(Buffer.from(b));
        bytes += b.length;
        if (bytes === 200) arrived();
      },
      drained: () => events.push(`${name} drained`),
      ended: () => events.push(`${name} ended`),
      errored: (err: Error) => events.push(`${name} errored ${err.message}`),
      closed: () => events.push(`${name} closed`),
    });
    serverT.start(sink("server"));
    clientT.start(sink("client"));
    // 200 writes of one byte, each its own record (each flushed by the end of its microtask checkpoint, before the
    // next): the server's first read(2) takes them all into OpenSSL's read-ahead buffer, after which the socket is
    // empty and epoll says nothing more.
    for (let i = 0; i < 200; i++) {
      t.true(clientT.write([Buffer.from([i])], 1));
      await Promise.resolve();
      t.is(clientT.queuedBytes, 0, "a small record leaves at the end of the turn that wrote it");
    }
    await within(all, 5000, "200 bytes at the server");
    t.true(Buffer.concat(got).equals(Buffer.from(Array.from({ length: 200 }, (_, i) => i))));
    clientT.end();
    t.false(clientT.writable);
    const deadline = Date.now() + 5000;
    while (!(clientT.destroyed && serverT.destroyed) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 5));
    // The server read close_notify (a clean end) and closed; the client then read a bare FIN from it.
    t.deepEqual(events, ["server ended", "server closed", "client ended", "client closed"]);
    t.false(serverT.endedUncleanly);
    t.true(clientT.endedUncleanly);
  }),
);

test.serial("after end(), a peer that never closes its side is dropped with tls_timeout", (t) =>
  leakChecked(t, async ({ reactor, context, db, cart }) => {
    const lfd = openListenerFd({ address: "127.0.0.1", port: 0 });
    let listener: Listener | undefined;
    const accepted = new Promise<number>((resolve) => {
      listener = new Listener(reactor, lfd, WorkerCounters.standalone(), resolve);
    });
    const opts = { reactor, handshakeTimeoutMs: 5000, closeTimeoutMs: 200 };
    const client = TlsTransport.open({ ...opts, context: context(cart), fd: dial(localPort(lfd)), role: "client" });
    const fd = await accepted;
    listener?.close();
    // The server end is never started: it does not read, so it never sees our close_notify and never closes.
    const server = await TlsTransport.open({ ...opts, context: context(db), fd, role: "server" });
    const clientT = await client;
    const heard: string[] = [];
    const closed = new Promise<void>((resolve) =>
      clientT.start({
        receive: () => heard.push("receive"),
        drained: () => heard.push("drained"),
        ended: () => heard.push("ended"),
        errored: (err) => heard.push(`errored ${(err as TlsError).code}`),
        closed: () => resolve(),
      }),
    );
    const started = Date.now();
    clientT.end();
    await within(closed, 5000, "the client's close");
    t.true(Date.now() - started >= 190, "not before its time");
    t.deepEqual(heard, ["errored tls_timeout"]);
    server.destroy();
  }),
);

test.serial("a peer from a foreign CA: both handshakes fail with tls_handshake, nothing is left open", (t) =>
  leakChecked(t, async ({ reactor, context, db, foreign }) => {
    // The client trusts only its own (foreign) CA and presents its certificate: each end refuses the other.
    const outcome = await handshakePair(reactor, context(db), context(foreign));
    t.is(outcome.server.status, "rejected");
    t.is(outcome.client.status, "rejected");
    for (const o of [outcome.server, outcome.client]) {
      const reason = o.status === "rejected" ? (o.reason as TlsError) : undefined;
      t.true(reason instanceof TlsError);
      t.is(reason?.code, "tls_handshake");
    }
    const client = outcome.client.status === "rejected" ? (outcome.client.reason as TlsError) : undefined;
    t.regex(client?.message ?? "", /certificate verify failed/);
  }),
);

test.serial(
  "a client certificate from a foreign CA: the server refuses it, the client's session errors on its first read",
  (t) =>
    leakChecked(t, async ({ reactor, context, db, foreign }) => {
      // The client trusts the server, so TLS 1.3 lets it finish before the server judged its certificate.
      const outcome = await handshakePair(reactor, context(db), context(foreign, db.bundlePem));
      t.is(outcome.server.status, "rejected");
      t.is(outcome.server.status === "rejected" ? (outcome.server.reason as TlsError).code : "", "tls_handshake");
      if (outcome.client.status !== "fulfilled") return t.fail("the TLS 1.3 client finishes first");
      const session = new H2Session(outcome.client.value, { role: "client" });
      const err = await closeOf(session);
      t.true(err instanceof TlsError, String(err));
      t.is((err as TlsError).code, "tls_protocol", String(err));
      t.regex((err as TlsError).message, /alert/);
    }),
);

/** A loopback listener, a client connected to it that never speaks, and the listener's accepted end of it. */
async function silentPeer(): Promise<{ lfd: number; silentClient: number; accepted: number }> {
  const lfd = openListenerFd({ address: "127.0.0.1", port: 0 });
  const silentClient = dial(localPort(lfd));
  let accepted = -1;
  for (let i = 0; i < 100 && accepted < 0; i++) {
    accepted = accept(lfd, null);
    if (accepted < 0) await new Promise((r) => setTimeout(r, 10));
  }
  return { lfd, silentClient, accepted };
}

test.serial("handshake timeout: a peer that never speaks fails the handshake with tls_timeout, on either side", (t) =>
  leakChecked(t, async ({ reactor, context, db, cart }) => {
    // Server side: the TCP connection is made, the client never sends a ClientHello.
    const { lfd, silentClient, accepted } = await silentPeer();
    const started = Date.now();
    const server = TlsTransport.open({
      reactor,
      context: context(db),
      fd: accepted,
      role: "server",
      handshakeTimeoutMs: 300,
    });
    const serverErr = await t.throwsAsync(server, { instanceOf: TlsError });
    t.is(serverErr?.code, "tls_timeout");
    t.true(Date.now() - started >= 290, "not before its time");

    // Client side: the listener's backlog completes the TCP handshake, but no one ever accepts or answers.
    const client = TlsTransport.open({
      reactor,
      context: context(cart),
      fd: dial(localPort(lfd)),
      role: "client",
      handshakeTimeoutMs: 300,
    });
    const clientErr = await t.throwsAsync(client, { instanceOf: TlsError });
    t.is(clientErr?.code, "tls_timeout");
    closeFd(silentClient);
    closeFd(lfd);
  }),
);

test.serial(
  "onStart hands the transport over before its handshake: destroy() then rejects open() with tls_closed",
  (t) =>
    leakChecked(t, async ({ reactor, context, db }) => {
      // A peer that never speaks: without destroy() the handshake would hold its fd for the whole timeout.
      const { lfd, silentClient, accepted } = await silentPeer();
      let started: TlsTransport | undefined;
      const server = TlsTransport.open({
        reactor,
        context: context(db),
        fd: accepted,
        role: "server",
        handshakeTimeoutMs: 60_000,
        onStart: (tr) => {
          started = tr;
        },
      });
      t.is(started?.fd, accepted, "heard synchronously, with the fd it owns");
      t.false(started?.destroyed);
      started?.destroy();
      t.true(started?.destroyed);
      const err = await t.throwsAsync(server, { instanceOf: TlsError });
      t.is(err?.code, "tls_closed");
      closeFd(silentClient);
      closeFd(lfd);
    }),
);

test.serial("a refused connect fails the handshake with tls_io ECONNREFUSED", (t) =>
  leakChecked(t, async ({ reactor, context, cart }) => {
    // A port nothing listens on: bind a listener, note its port, close it.
    const lfd = openListenerFd({ address: "127.0.0.1", port: 0 });
    const port = localPort(lfd);
    closeFd(lfd);
    const client = TlsTransport.open({
      reactor,
      context: context(cart),
      fd: dial(port),
      role: "client",
      handshakeTimeoutMs: 5000,
    });
    const err = await t.throwsAsync(client, { instanceOf: TlsError });
    t.is(err?.code, "tls_io");
    t.is(err?.errno, 111);
  }),
);

test.serial(
  "in a worker thread: both sessions on the worker's own Reactor, echo and 8 MiB, released before it exits",
  async (t) => {
    const { db, cart } = await workloads();
    const baseline = fdBaseline();
    const worker = new Worker(new URL("./support/tls-transport-worker.js", import.meta.url), {
      workerData: { db, cart },
    });
    // Listen for the exit before the message: a worker that ends before its message is read emits both in one
    // turn (Node drains the port on exit), and an exit listener added after the message would wait forever.
    const exited = once(worker, "exit");
    const [result] = await once(worker, "message");
    const [code] = await exited;
    t.is(code, 0);
    t.is(result.error, undefined);
    t.is(result.status, "200");
    t.is(result.echoed, "hello from a worker");
    t.is(result.bytes, 8 * 1024 * 1024);
    t.true(result.hashesEqual);
    t.deepEqual(result.closeErrors, [null, null]);
    t.deepEqual(result.liveDuring, { contexts: 2, connections: 2 });
    t.deepEqual(result.liveAfter, { contexts: 0, connections: 0 });
    t.deepEqual(liveObjects(), { contexts: 0, connections: 0 }, "the main thread's counts are its own");
    await assertNoLeak(t, baseline);
  },
);

test("checkHbonePeer: a refused certificate keeps its reason, then identity, then ALPN", (t) => {
  const db = sid("shop", "db");
  t.deepEqual(checkHbonePeer({ ok: false, reason: "unknown_ca", detail: "x" }, "h2", db), {
    ok: false,
    reason: "unknown_ca",
    detail: "x",
  });
  t.like(checkHbonePeer({ ok: true, id: sid("shop", "cart") }, "", db), { ok: false, reason: "identity_mismatch" });
  t.like(checkHbonePeer({ ok: true, id: db }, "", db), { ok: false, reason: "bad_alpn", detail: "ALPN none" });
  t.like(checkHbonePeer({ ok: true, id: db }, "http/1.1"), { ok: false, reason: "bad_alpn" });
  t.deepEqual(checkHbonePeer({ ok: true, id: db }, "h2", db), { ok: true, id: db });
});
