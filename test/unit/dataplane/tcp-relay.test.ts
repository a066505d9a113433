import { createHash } from "node:crypto";
import { once } from "node:events";
import net from "node:net";
import test, { type ExecutionContext } from "ava";
import { Listener } from "../../../agent/dataplane/listener.js";
import { startConnect } from "../../../agent/dataplane/pod-socket.js";
import { Reactor } from "../../../agent/dataplane/reactor.js";
import { COUNTER, WorkerCounters } from "../../../agent/dataplane/shared-counters.js";
import { type ConnectionResult, TcpRelay } from "../../../agent/dataplane/tcp-relay.js";
import { DataplaneWorker } from "../../../agent/dataplane/worker-handle.js";
import { AF_INET, tcpSocket } from "../../../native-bindings/io.js";
import { closeFdQuietly } from "../../../native-bindings/libc.js";
import { assertNoLeak, fdBaseline } from "../../support/fd-leak.js";
import { backend, closeError, hashAll, readAll, relayListener, sendMiB, withRelay } from "./support/relay.js";

test.serial("echo: 20 clients, 50 round trips each, then a clean close both ways", async (t) => {
  const echo = await backend((socket) => socket.pipe(socket));
  await withRelay(t, echo.port, async (rig) => {
    await Promise.all(
      Array.from({ length: 20 }, async (_, c) => {
        const client = await rig.connect();
        for (let i = 0; i < 50; i++) {
          const message = `client ${c} message ${i}\n`;
          client.write(message);
          const [reply] = (await once(client, "data")) as [Buffer];
          t.is(reply.toString(), message);
        }
        client.end();
        await once(client, "close");
      }),
    );
    const stats = await rig.stats();
    t.is(stats.relay.opened, 20);
    t.is(stats.listener.accepted, 20);
  });
  await echo.close();
});

test.serial("1,000 connections open at once through one worker, each echoed, then all closed", async (t) => {
  const echo = await backend((socket) => socket.pipe(socket));
  await withRelay(t, echo.port, async (rig) => {
    const clients = await Promise.all(Array.from({ length: 1000 }, () => rig.connect()));
    const replies = await Promise.all(
      clients.map(async (client, i) => {
        client.write(`n${i}`);
        const [reply] = (await once(client, "data")) as [Buffer];
        return reply.toString() === `n${i}`;
      }),
    );
    t.is(replies.filter(Boolean).length, 1000);
    const stats = await rig.stats();
    t.is(stats.live, 1000);
    t.is(stats.watched, 2001, "the listener and both sides of every connection");
    await Promise.all(
      clients.map((client) => {
        const closed = once(client, "close");
        client.end();
        return closed;
      }),
    );
  });
  await echo.close();
});

test.serial("64 MiB each way at once arrives intact (sha256), through backpressure", async (t) => {
  const mib = 64;
  let backendSent: Promise<string> | undefined;
  let backendGot: Promise<{ sha256: string; bytes: number }> | undefined;
  const server = await backend((socket) => {
    backendGot = hashAll(socket);
    backendSent = sendMiB(socket, mib);
  });
  await withRelay(t, server.port, async (rig) => {
    const client = await rig.connect();
    // Listen for close now: it may come while the backend's figures are awaited below.
    const closed = once(client, "close");
    const clientGot = hashAll(client);
    const clientSent = await sendMiB(client, mib);
    const got = await clientGot;
    t.is(got.bytes, mib * 1024 * 1024);
    t.is(got.sha256, String(await backendSent));
    const upstream = await backendGot;
    t.is(upstream?.bytes, mib * 1024 * 1024);
    t.is(upstream?.sha256, clientSent);
    await closed;
    const stats = await rig.stats();
    t.true(stats.relay.backpressured > 0, "some writes were short and waited for EPOLLOUT");
    t.is(stats.relay.closed, 1);
    t.is(stats.relay.upstreamBytes, mib * 1024 * 1024, "every byte to the backend counted, pending ones too");
    t.is(stats.relay.downstreamBytes, mib * 1024 * 1024);
  });
  await server.close();
});

test.serial("half-close from the client: its EOF reaches the backend, which still answers", async (t) => {
  const server = await backend(async (socket) => {
    const got = await readAll(socket);
    socket.end(`you said ${got.toString()}`);
  });
  await withRelay(t, server.port, async (rig) => {
    const client = await rig.connect();
    const closed = once(client, "close");
    const answer = readAll(client);
    client.end("hello");
    t.is((await answer).toString(), "you said hello");
    await closed;
    t.is((await rig.stats()).relay.closed, 1);
  });
  await server.close();
});

test.serial("half-close from the backend: its EOF reaches the client, which still sends", async (t) => {
  let heard: Promise<Buffer> | undefined;
  const server = await backend((socket) => {
    heard = readAll(socket);
    socket.end("bye first");
  });
  await withRelay(t, server.port, async (rig) => {
    const client = await rig.connect();
    const closed = once(client, "close");
    t.is((await readAll(client)).toString(), "bye first");
    client.end("still here");
    await closed;
    t.is((await heard)?.toString(), "still here");
    t.is((await rig.stats()).relay.closed, 1);
  });
  await server.close();
});

test.serial("a client reset reaches the backend as a reset", async (t) => {
  let backendError: Promise<NodeJS.ErrnoException | undefined> | undefined;
  const server = await backend((socket) => {
    backendError = closeError(socket);
    socket.write("ready");
  });
  await withRelay(t, server.port, async (rig) => {
    const client = await rig.connect();
    await once(client, "data");
    client.resetAndDestroy();
    t.is((await backendError)?.code, "ECONNRESET");
    t.is((await rig.stats()).relay.reset, 1);
  });
  await server.close();
});

test.serial("a backend reset reaches the client as a reset", async (t) => {
  const server = await backend((socket) => {
    socket.once("data", () => socket.resetAndDestroy());
  });
  await withRelay(t, server.port, async (rig) => {
    const client = await rig.connect();
    const error = closeError(client);
    client.write("reset me");
    t.is((await error)?.code, "ECONNRESET");
    t.is((await rig.stats()).relay.reset, 1);
  });
  await server.close();
});

test.serial("both sides closing at once, 50 times over: end+end and destroy+destroy", async (t) => {
  const server = await backend((socket) => {
    socket.on("error", () => {});
    socket.once("data", (chunk: Buffer) => {
      if (chunk.toString() === "end") socket.end("done");
      else socket.destroy();
    });
    socket.resume();
  });
  await withRelay(t, server.port, async (rig) => {
    await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const client = await rig.connect();
        client.on("error", () => {});
        client.resume();
        const closed = once(client, "close");
        if (i % 2 === 0) {
          client.end("end");
        } else {
          client.write("destroy");
          // The backend destroys its side when this arrives; destroy ours in the same moment.
          setImmediate(() => client.destroy());
        }
        await closed;
      }),
    );
    const stats = await rig.stats();
    t.is(stats.relay.opened, 50);
    t.is(stats.relay.closed + stats.relay.reset, 50, "every connection ended exactly once");
  });
  await server.close();
});

test.serial("connect refused: the client is reset", async (t) => {
  const unused = relayListener();
  closeFdQuietly(unused.fd);
  await withRelay(t, unused.port, async (rig) => {
    // The relay accepts (the kernel completed the handshake), then resets the client once the connect fails.
    t.is((await closeError(rig.dial()))?.code, "ECONNRESET");
    const stats = await rig.stats();
    t.is(stats.relay.connectFailed, 1);
    t.is(stats.relay.reset, 1);
  });
});

test.serial("connect timeout: a backend whose accept queue is full never answers; the client is reset", async (t) => {
  // backlog 0: one connection fills the accept queue, later SYNs are dropped and the connect hangs.
  const full = relayListener(0);
  const fillers = [
    net.connect({ host: "127.0.0.1", port: full.port }),
    net.connect({ host: "127.0.0.1", port: full.port }),
  ];
  for (const filler of fillers) filler.on("error", () => {});
  await once(fillers[0] as net.Socket, "connect");
  await withRelay(
    t,
    full.port,
    async (rig) => {
      const client = await rig.connect();
      const started = Date.now();
      t.is((await closeError(client))?.code, "ECONNRESET");
      t.true(Date.now() - started < 5000, "reset within 5 s (timeout 300 ms)");
      const stats = await rig.stats();
      t.is(stats.relay.connectTimedOut, 1);
    },
    300,
  );
  for (const filler of fillers) filler.destroy();
  closeFdQuietly(full.fd);
});

test.serial("stopping the worker with connections open resets them and leaves no fd behind", async (t) => {
  const before = fdBaseline();
  const echo = await backend((socket) => {
    socket.on("error", () => {});
    socket.pipe(socket);
  });
  const worker = new DataplaneWorker();
  const { fd, port } = relayListener();
  await worker.serve(fd, { address: "127.0.0.1", port: echo.port });
  const clients = await Promise.all(
    Array.from({ length: 5 }, async () => {
      const client = net.connect({ host: "127.0.0.1", port });
      await once(client, "connect");
      client.write("hello");
      await once(client, "data");
      return client;
    }),
  );
  t.is((await worker.stats()).live, 5);
  const errors = clients.map((client) => closeError(client));
  t.is(await worker.stop(), 0, "the worker exits cleanly with connections open");
  t.deepEqual(
    (await Promise.all(errors)).map((err) => err?.code),
    clients.map(() => "ECONNRESET"),
  );
  await echo.close();
  await assertNoLeak(t, before);
});

interface RelayToRig {
  relay: TcpRelay;
  counters: WorkerCounters;
  /** The listener's port: each client accepted there is handed to `route`. */
  port: number;
  connect(): Promise<net.Socket>;
}

/**
 * A TcpRelay without a target on this thread's own reactor; `route` gets each accepted client and calls relayTo
 * with an upstream socket it made (as the proxy does in a pod's namespace). Afterwards no connection, fd or
 * reactor slot of the test is left.
 */
async function withRelayTo(
  t: ExecutionContext,
  route: (clientFd: number, relay: TcpRelay) => void,
  body: (rig: RelayToRig) => Promise<void>,
): Promise<void> {
  const before = fdBaseline();
  const reactor = new Reactor();
  const counters = WorkerCounters.standalone();
  const relay = new TcpRelay(reactor, { connectTimeoutMs: 5000, counters });
  const { fd, port } = relayListener();
  const listener = new Listener(reactor, fd, counters, (client) => route(client, relay));
  const serving = fdBaseline();
  try {
    await body({
      relay,
      counters,
      port,
      async connect() {
        const socket = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true });
        await once(socket, "connect");
        return socket;
      },
    });
    await assertNoLeak(t, serving, () => relay.live + reactor.size - 1);
  } finally {
    relay.closeAll();
    listener.close();
    await reactor.close();
  }
  await assertNoLeak(t, before);
}

/** A socket of this thread with its connect to 127.0.0.1:`port` started: the fd and connect's result. */
function upstream(port: number): { fd: number; started: number } {
  const fd = tcpSocket(AF_INET);
  return { fd, started: startConnect(fd, { address: "127.0.0.1", port }) };
}

/**
 * A backend that greets each connection with `name`, then echoes; it starts reading only after 100 ms, so a
 * client that sends much meets a full socket in the relay.
 */
function greeter(name: string) {
  return backend((socket) => {
    socket.write(name);
    setTimeout(() => socket.pipe(socket), 100);
  });
}

test.serial("relayTo: each connection to the target its caller chose; onDone has its byte counts", async (t) => {
  const a = await greeter("A");
  const b = await greeter("B");
  // A failed assertion ends the test at once: the backends close whatever happens.
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const results: ConnectionResult[][] = [];
  let accepted = 0;
  await withRelayTo(
    t,
    (clientFd, relay) => {
      // Even connections to A, odd ones to B; each with its own onDone.
      const n = accepted++;
      const up = upstream(n % 2 === 0 ? a.port : b.port);
      results[n] = [];
      relay.relayTo(clientFd, up.fd, up.started, (r) => results[n]?.push(r));
    },
    async (rig) => {
      // One at a time, so the n-th accept is the n-th client.
      const replies: string[] = [];
      for (let i = 0; i < 4; i++) {
        const client = await rig.connect();
        const closed = once(client, "close");
        const reply = readAll(client);
        client.end(`hello ${"x".repeat(i * 1000)}`);
        replies.push((await reply).toString());
        await closed;
      }
      t.deepEqual(
        replies.map((r) => r.slice(0, 7)),
        ["Ahello ", "Bhello ", "Ahello ", "Bhello "],
      );
      // A bulk transfer through backpressure: pending bytes are counted as they are written.
      const client = await rig.connect();
      const closed = once(client, "close");
      const got = readAll(client);
      const sent = await sendMiB(client, 8);
      const back = await got;
      t.is(back.length, 8 * 1024 * 1024 + 1, "the greeting and every byte echoed");
      t.is(createHash("sha256").update(back.subarray(1)).digest("hex"), sent);
      await closed;
      t.true(rig.counters.get(COUNTER.backpressured) > 0, "some writes waited for EPOLLOUT");
    },
  );
  t.deepEqual(
    results.map((r) => r.length),
    [1, 1, 1, 1, 1],
    "onDone once per connection",
  );
  const counts = results.map((r) => r[0]);
  for (let i = 0; i < 4; i++) {
    const sent = 6 + i * 1000;
    t.deepEqual(counts[i], { toUpstream: sent, toClient: sent + 1, reset: false }, `connection ${i}`);
  }
  t.deepEqual(counts[4], { toUpstream: 8 * 1024 * 1024, toClient: 8 * 1024 * 1024 + 1, reset: false });
});

test.serial("relayTo: a refused connect, late or at once, resets the client; onDone says reset and why", async (t) => {
  const unused = relayListener();
  closeFdQuietly(unused.fd);
  const results: ConnectionResult[] = [];
  let accepted = 0;
  await withRelayTo(
    t,
    (clientFd, relay) => {
      if (accepted++ === 0) {
        const up = upstream(unused.port);
        relay.relayTo(clientFd, up.fd, up.started, (r) => results.push(r));
      } else {
        // The caller's connect failed at once: the relay still owns (and closes) both fds.
        relay.relayTo(clientFd, tcpSocket(AF_INET), -111, (r) => results.push(r));
      }
    },
    async (rig) => {
      for (let i = 0; i < 2; i++) {
        const client = net.connect({ host: "127.0.0.1", port: rig.port });
        t.is((await closeError(client))?.code, "ECONNRESET", `client ${i}`);
      }
      t.is(rig.counters.get(COUNTER.connect_failures), 2);
      t.is(rig.counters.get(COUNTER.connections_reset), 2);
      t.throws(() => rig.relay.relay(tcpSocket(AF_INET)), { message: /without a target/ });
    },
  );
  const refused = { toUpstream: 0, toClient: 0, reset: true, error: "connect failed: ECONNREFUSED" };
  t.deepEqual(results, [refused, refused]);
});
