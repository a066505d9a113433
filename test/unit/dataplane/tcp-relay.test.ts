import { once } from "node:events";
import net from "node:net";
import test from "ava";
import { DataplaneWorker } from "../../../agent/dataplane/worker-handle.js";
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
