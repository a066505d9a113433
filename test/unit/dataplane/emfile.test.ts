import { fork } from "node:child_process";
import { once } from "node:events";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import test from "ava";
import type { ListenerStats } from "../../../agent/dataplane/listener.js";
import { ACCEPT_PAUSE_MS } from "../../../agent/dataplane/listener.js";
import type { RelayStats } from "../../../agent/dataplane/tcp-relay.js";
import { assertNoLeak, fdBaseline } from "../../support/fd-leak.js";
import { backend } from "./support/relay.js";

interface ChildStats {
  relay: RelayStats;
  listener: ListenerStats;
  live: number;
  cpuMicros: number;
  /** The accept-exhaustion lines logged so far. */
  logged: Array<{ code: string; suppressed: number }>;
}

/** Sends `text` and resolves true if it comes back within `ms`. */
async function echoes(socket: net.Socket, text: string, ms: number): Promise<boolean> {
  socket.write(text);
  const reply = once(socket, "data").then(
    ([chunk]) => (chunk as Buffer).toString() === text,
    () => false,
  );
  return Promise.race([reply, sleep(ms).then(() => false)]);
}

const emfile = test.macro<[string, boolean]>({
  title: (_title, mode) =>
    `EMFILE on accept${mode}: the listener pauses instead of spinning, counts it, logs it once per interval, and serves again once fds free up`,
  async exec(t, _mode, shared) {
    const baseline = fdBaseline();
    const echo = await backend((socket) => socket.pipe(socket));
    const child = fork(new URL("./support/emfile-child.js", import.meta.url), [], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    const ask = async <T>(message: unknown): Promise<T> => {
      child.send(message as string);
      const [reply] = await once(child, "message");
      return reply as T;
    };
    // 6 free descriptors: a few relayed connections (client + upstream each), then accept fails with EMFILE. A client
    // whose accept got the last fd is reset when the upstream socket() fails; the next one waits in the backlog.
    const { port } = await ask<{ port: number }>({ start: true, targetPort: echo.port, free: 6, shared });
    t.teardown(() => {
      if (child.exitCode === null) child.kill();
    });
    const clients: net.Socket[] = [];
    let served = 0;
    let waiting: net.Socket | undefined;
    let held = 0;
    for (let i = 0; i < 10 && !waiting; i++) {
      const client = net.connect({ host: "127.0.0.1", port });
      client.on("error", () => {});
      clients.push(client);
      // The kernel completes the handshake before accept; a reset may already be waiting.
      await new Promise((resolve) => {
        client.once("connect", resolve);
        client.once("close", resolve);
      });
      if (!client.destroyed && (await echoes(client, `ping ${i}`, 1000))) {
        served++;
        continue;
      }
      const stats = await ask<ChildStats>("stats");
      if (stats.listener.acceptExhausted > 0) waiting = client;
      // One descriptor was left: accept took it and the upstream socket() failed, so the client was reset (counted)
      // and the fd freed again. Take that odd one away so the next accept itself fails.
      else if (stats.relay.socketFailed > held) held = (await ask<{ held: number }>("hold")).held;
    }
    t.true(served >= 1, `${served} connections relayed before the descriptors ran out`);
    if (!waiting) {
      t.fail("accept never ran out of descriptors");
      return;
    }

    const first = await ask<ChildStats>("stats");
    await sleep(1000);
    const second = await ask<ChildStats>("stats");
    t.true(first.listener.acceptExhausted >= 1, "EMFILE counted");
    const retries = second.listener.acceptExhausted - first.listener.acceptExhausted;
    // A level-triggered listener that kept trying would fail accept hundreds of thousands of times a second.
    t.true(retries <= (2 * 1000) / ACCEPT_PAUSE_MS, `accept retried ${retries} times in 1 s (one per pause)`);
    const cpuMs = (second.cpuMicros - first.cpuMicros) / 1000;
    t.log(`out of fds for 1 s: ${retries} accept retries, ${cpuMs.toFixed(1)} ms of CPU`);
    t.true(cpuMs < 500, "the child did not spin a core while out of fds");
    // Every pause reached the log, and one line came out: a line per retry (or per connection) would be a flood.
    t.true(second.listener.acceptExhausted >= 3, "several pauses while out of fds");
    t.deepEqual(second.logged, [{ code: "EMFILE", suppressed: 0 }], "logged once for the whole period");

    // Free two descriptors: the waiting connection is accepted and relayed.
    const leaving = clients.shift() as net.Socket;
    const reply = once(waiting, "data");
    leaving.end();
    await once(leaving, "close");
    t.is(((await reply)[0] as Buffer).toString(), `ping ${clients.length}`, "the queued client's bytes are relayed");
    t.true(await echoes(waiting, "again", 5000));

    for (const client of clients) client.destroy();
    const exited = once(child, "exit");
    child.send("stop");
    t.deepEqual(await exited, [0, null], "the child's loop closed cleanly");
    await echo.close();
    await assertNoLeak(t, baseline);
  },
});

test.serial(emfile, "", false);
// A worker pool's shared listener is EPOLLEXCLUSIVE, which epoll_ctl cannot MOD: its pause leaves the epoll set.
test.serial(emfile, " (listener shared by a worker pool)", true);
