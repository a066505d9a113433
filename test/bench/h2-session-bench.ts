/**
 * A focused measure of ambit's own HTTP/2 over Node sockets, without TLS, nginx or the proxy: a client and a server
 * H2Session in this one process over loopback TCP. Its CPU time (user + sys, printed at the end) is the session's
 * cost plus Node's socket layer, so two builds of agent/h2 compare on the same machine by running this under each.
 *
 *   node dist/test/bench/h2-session-bench.js bulk [MiB]       one CONNECT stream carries MiB (default 1024) up
 *   node dist/test/bench/h2-session-bench.js streams [COUNT]  COUNT (default 100000) CONNECT streams, 64 concurrent,
 *                                                             each: answer 200, 100 bytes each way, half-close both
 */
import net from "node:net";
import { H2Session } from "../../agent/h2/session.js";
import type { H2Stream } from "../../agent/h2/stream.js";

/** The proxy's windows (agent/proxy/tuning.ts defaults), so flow control runs as it does in HBONE. */
const settings = { streamWindow: 4 * 1024 * 1024, connectionWindow: 16 * 1024 * 1024, maxConcurrentStreams: 1000 };
const CONCURRENT = 64;
const SMALL = Buffer.alloc(100, 0x61);

type Handlers = Parameters<H2Stream["attach"]>[0];

function handlers(stream: H2Stream, over: Partial<Handlers>): Handlers {
  return {
    data: (c) => stream.consumed(c.length),
    end: () => {},
    reset: (code) => {
      throw new Error(`stream ${stream.id} reset (${code})`);
    },
    drain: () => {},
    close: () => {},
    ...over,
  };
}

async function pair(onStream: (stream: H2Stream) => void): Promise<{ client: H2Session; close(): void }> {
  let server: H2Session | undefined;
  const listener = net.createServer({ noDelay: true }, (sock) => {
    server = new H2Session(sock, { role: "server", settings });
    server.on("stream", onStream);
  });
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const sock = net.connect({ port: (listener.address() as net.AddressInfo).port, host: "127.0.0.1", noDelay: true });
  await new Promise<void>((resolve) => sock.once("connect", resolve));
  const client = new H2Session(sock, { role: "client", settings });
  return {
    client,
    close: () => {
      client.destroy();
      server?.destroy();
      listener.close();
    },
  };
}

async function bulk(mib: number): Promise<void> {
  const total = mib * 1024 * 1024;
  let received = 0;
  let done: () => void = () => {};
  const finished = new Promise<void>((resolve) => {
    done = resolve;
  });
  const { client, close } = await pair((stream) => {
    stream.attach(
      handlers(stream, {
        data: (c) => {
          received += c.length;
          stream.consumed(c.length);
        },
        end: () => stream.end(),
      }),
    );
    stream.respond(200);
  });
  const stream = client.request([
    [":method", "CONNECT"],
    [":authority", "10.0.0.1:80"],
  ]);
  // 64 KiB writes, the size a Node socket read hands the relay.
  const piece = Buffer.alloc(64 * 1024, 0x62);
  let sent = 0;
  const pump = () => {
    while (sent < total) {
      sent += piece.length;
      if (!stream.write(piece)) return;
    }
    stream.end();
  };
  // Over once the server's END_STREAM is back: it ends its side after the last byte arrived.
  stream.attach(handlers(stream, { drain: pump, close: () => done() }));
  pump();
  await finished;
  if (received !== total) throw new Error(`received ${received} of ${total} bytes`);
  close();
}

async function streams(count: number): Promise<void> {
  const { client, close } = await pair((stream) => {
    stream.attach(handlers(stream, { end: () => stream.end() }));
    stream.respond(200);
    stream.write(SMALL);
  });
  let started = 0;
  let finished = 0;
  let done: () => void = () => {};
  const all = new Promise<void>((resolve) => {
    done = resolve;
  });
  const open = () => {
    started++;
    const stream = client.request([
      [":method", "CONNECT"],
      [":authority", "10.0.0.1:80"],
    ]);
    stream.attach(
      handlers(stream, {
        headers: () => {
          stream.write(SMALL);
          stream.end();
        },
        close: () => {
          finished++;
          if (started < count) open();
          else if (finished === count) done();
        },
      }),
    );
  };
  for (let i = 0; i < CONCURRENT; i++) open();
  await all;
  close();
}

const [mode, arg] = process.argv.slice(2);
const before = process.cpuUsage();
const wall = performance.now();
if (mode === "bulk") await bulk(Number(arg ?? 1024));
else if (mode === "streams") await streams(Number(arg ?? 100_000));
else throw new Error("usage: h2-session-bench bulk [MiB] | streams [COUNT]");
const cpu = process.cpuUsage(before);
console.log(
  `${mode}: cpu ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s (user ${(cpu.user / 1e6).toFixed(2)}, sys ` +
    `${(cpu.system / 1e6).toFixed(2)}), wall ${((performance.now() - wall) / 1000).toFixed(2)} s`,
);
