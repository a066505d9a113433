/**
 * The two HTTP/2 workloads the h2 micro-benches run over a client/server H2Session pair, whatever carries it (Node
 * sockets, Node tls, TlsTransport on a Reactor): `bulk`, one CONNECT stream carrying MiB up; `streams`, COUNT
 * CONNECT streams, 64 at a time, each answered 200 with 100 bytes each way and half-closed by both sides.
 */
import type { H2Session } from "../../agent/h2/session.js";
import type { H2Stream } from "../../agent/h2/stream.js";
import { handlers } from "../support/h2-handlers.js";

/** The proxy's windows (agent/proxy/tuning.ts defaults), so flow control runs as it does in HBONE. */
export const H2_BENCH_SETTINGS = {
  streamWindow: 4 * 1024 * 1024,
  connectionWindow: 16 * 1024 * 1024,
  maxConcurrentStreams: 1000,
};
const CONCURRENT = 64;
const SMALL = Buffer.alloc(100, 0x61);

export interface Pair {
  client: H2Session;
  close(): void;
}
export type MakePair = (onStream: (s: H2Stream) => void) => Promise<Pair>;

export async function bulk(pair: MakePair, mib: number): Promise<void> {
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
  // 64 KiB writes, the size a relay's read hands the stream.
  const piece = Buffer.alloc(64 * 1024, 0x62);
  let sent = 0;
  const pump = () => {
    while (sent < total) {
      sent += piece.length;
      if (!stream.write(piece)) return;
    }
    stream.end();
  };
  stream.attach(handlers(stream, { drain: pump, close: () => done() }));
  pump();
  await finished;
  if (received !== total) throw new Error(`received ${received} of ${total} bytes`);
  close();
}

export async function streams(pair: MakePair, count: number): Promise<void> {
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
