import { once } from "node:events";
import net from "node:net";
import test from "ava";
import { COUNTER } from "../../../agent/dataplane/shared-counters.js";
import { DataplaneWorkerPool } from "../../../agent/dataplane/worker-pool.js";
import { assertNoLeak, fdBaseline } from "../../support/fd-leak.js";
import { backend, closeError, relayListener } from "./support/relay.js";

/** Connects to 127.0.0.1:`port`, sends `text` and resolves with what comes back first. */
async function echoOnce(port: number, text: string): Promise<net.Socket> {
  const client = net.connect({ host: "127.0.0.1", port });
  await once(client, "connect");
  client.write(text);
  const [reply] = (await once(client, "data")) as [Buffer];
  if (reply.toString() !== text) throw new Error(`expected ${text}, got ${reply.toString()}`);
  return client;
}

test.serial("2 workers share one listener: 200 connections are all relayed and both workers accept some", async (t) => {
  const before = fdBaseline();
  const echo = await backend((socket) => socket.pipe(socket));
  const pool = new DataplaneWorkerPool(2);
  const { fd, port } = relayListener();
  await pool.serve(fd, { address: "127.0.0.1", port: echo.port });
  // 10 waves of 20 connections at once: each wave wakes both workers while the other is busy.
  for (let wave = 0; wave < 10; wave++) {
    const clients = await Promise.all(Array.from({ length: 20 }, (_, i) => echoOnce(port, `wave ${wave} client ${i}`)));
    await Promise.all(
      clients.map((client) => {
        const closed = once(client, "close");
        client.end();
        return closed;
      }),
    );
  }
  const stats = await pool.stats();
  const accepted = stats.map((s) => s.listener.accepted);
  t.is(stats.length, 2);
  t.is(
    accepted.reduce((a, b) => a + b, 0),
    200,
    "every connection accepted exactly once",
  );
  t.true(
    accepted.every((n) => n > 0),
    `both workers accepted connections: ${accepted.join("/")}`,
  );
  t.deepEqual(
    [0, 1].map((row) => pool.counters.value(row, COUNTER.connections_accepted)),
    accepted,
    "each worker counts in its own row of the pool's shared counters",
  );
  t.is(
    stats.reduce((sum, s) => sum + s.relay.closed, 0),
    200,
    "every connection relayed and closed cleanly",
  );
  t.deepEqual(await pool.stop(), [0, 0], "both threads exit cleanly");
  await echo.close();
  await assertNoLeak(t, before);
});

test.serial("stopping the pool resets open connections, closes the shared listener and leaves no fd", async (t) => {
  const before = fdBaseline();
  const echo = await backend((socket) => {
    socket.on("error", () => {});
    socket.pipe(socket);
  });
  const pool = new DataplaneWorkerPool(2);
  const { fd, port } = relayListener();
  await pool.serve(fd, { address: "127.0.0.1", port: echo.port });
  const clients = await Promise.all(Array.from({ length: 20 }, (_, i) => echoOnce(port, `open ${i}`)));
  const live = (await pool.stats()).map((s) => s.live);
  t.is(
    live.reduce((a, b) => a + b, 0),
    20,
  );
  const errors = clients.map((client) => closeError(client));
  t.deepEqual(await pool.stop(), [0, 0], "both threads exit cleanly with connections open");
  t.deepEqual(
    (await Promise.all(errors)).map((err) => err?.code),
    clients.map(() => "ECONNRESET"),
  );
  t.is((await closeError(net.connect({ host: "127.0.0.1", port })))?.code, "ECONNREFUSED", "the listener is closed");
  await echo.close();
  await assertNoLeak(t, before);
});

test.serial("a pool needs at least one worker; serve after stop closes the fd it was given", async (t) => {
  t.throws(() => new DataplaneWorkerPool(0), { message: /1 or more workers/ });
  const before = fdBaseline();
  const pool = new DataplaneWorkerPool(1);
  t.deepEqual(await pool.stop(), [0]);
  const { fd } = relayListener();
  await t.throwsAsync(pool.serve(fd, { address: "127.0.0.1", port: 9 }), { message: /stopped/ });
  await assertNoLeak(t, before);
});
