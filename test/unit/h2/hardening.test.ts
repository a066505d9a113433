/**
 * What a misbehaving but authenticated peer can make an HBONE session do: buffer data (bounded by the session's
 * window, not by streams x stream window), reset streams before they are answered (rapid reset), or send frames on
 * streams only the other side may open.
 */
import http2 from "node:http2";
import net from "node:net";
import test, { type ExecutionContext } from "ava";
import { ErrorCode, Flag, FrameType } from "../../../agent/h2/constants.js";
import { H2Error } from "../../../agent/h2/errors.js";
import { FrameReader } from "../../../agent/h2/frame-reader.js";
import { encodeHeaders } from "../../../agent/h2/hpack.js";
import type { H2Stream } from "../../../agent/h2/stream.js";
import { headerRecord } from "../../../agent/h2/validate-headers.js";
import { collect, echo, frame, goawayCodeAfter, goawayCodeIn, h2Client, h2Server, preface } from "./support.js";

const KiB = 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `read` until it has not changed for `quietMs`; returns the settled value. */
async function settled(read: () => number, quietMs = 500): Promise<number> {
  let last = read();
  let since = Date.now();
  while (Date.now() - since < quietMs) {
    await sleep(25);
    const now = read();
    if (now !== last) {
      last = now;
      since = Date.now();
    }
  }
  return last;
}

test("data held by streams whose apps do not read is bounded by the session window, and flows once read", async (t) => {
  const streams: { stream: H2Stream; received: number; read: number; done: boolean }[] = [];
  const server = await h2Server(
    (stream) => {
      const entry = { stream, received: 0, read: 0, done: false };
      streams.push(entry);
      stream.attach({
        data: (c) => {
          entry.received += c.length;
        },
        end: () => {
          entry.done = true;
        },
        reset: () => {},
        drain: () => {},
        close: () => {},
      });
      stream.respond(200);
    },
    { settings: { streamWindow: 128 * KiB, connectionWindow: 256 * KiB } },
  );
  const client = http2.connect(`http://127.0.0.1:${server.port}`);
  t.teardown(async () => {
    client.destroy();
    await server.close();
  });
  client.on("error", () => {});
  // Eight streams of 128 KiB each: together four times the session window.
  for (let i = 0; i < 8; i++) {
    const req = client.request({ ":method": "CONNECT", ":authority": `10.0.0.${i + 1}:80` });
    req.on("error", () => {});
    req.end(Buffer.alloc(128 * KiB, i));
  }
  const total = () => streams.reduce((sum, s) => sum + s.received, 0);
  const plateau = await settled(total);
  t.true(plateau <= 256 * KiB, `held ${plateau} bytes, more than the 256 KiB session window`);
  t.true(plateau >= 128 * KiB, `held only ${plateau} bytes`);

  // Streams reset with data unread give their share of the session window back (granted to the peer once half
  // the window is free again): the others move on.
  const reset = new Set<(typeof streams)[number]>();
  for (const s of streams) {
    if ([...reset].reduce((sum, r) => sum + r.received, 0) >= 128 * KiB) break;
    s.stream.reset();
    reset.add(s);
  }
  t.true((await settled(total)) > plateau, "the reset streams' bytes were not released");

  // Apps that read make room: every other stream's 128 KiB arrives, and every stream ends.
  const rest = () => streams.filter((s) => !reset.has(s));
  while (rest().length < 8 - reset.size || rest().some((s) => !s.done)) {
    for (const s of rest()) {
      s.stream.consumed(s.received - s.read);
      s.read = s.received;
    }
    await sleep(20);
  }
  t.deepEqual(
    rest().map((s) => s.received),
    Array(8 - reset.size).fill(128 * KiB),
  );
});

const request = (id: number) =>
  frame(
    FrameType.HEADERS,
    Flag.END_HEADERS,
    id,
    encodeHeaders([
      [":method", "CONNECT"],
      [":authority", "10.0.0.1:80"],
    ]),
  );
const rst = (id: number) => {
  const code = Buffer.alloc(4);
  code.writeUInt32BE(ErrorCode.CANCEL);
  return frame(FrameType.RST_STREAM, 0, id, code);
};
const opening = () => Buffer.concat([preface, frame(FrameType.SETTINGS, 0, 0)]);
const openAndReset = (ids: number[]) => Buffer.concat(ids.flatMap((id) => [request(id), rst(id)]));

/** Sends `bytes`, then a PING; resolves with all the server sent once it answers the PING or closes. */
function sendThenPing(t: ExecutionContext, port: number, bytes: Buffer): Promise<Buffer> {
  const sock = net.connect(port, "127.0.0.1");
  t.teardown(() => sock.destroy());
  const got: Buffer[] = [];
  const ping = Buffer.from("8-bytes!");
  return new Promise((resolve) => {
    sock.on("data", (c: Buffer) => {
      got.push(c);
      if (Buffer.concat(got).includes(ping)) resolve(Buffer.concat(got));
    });
    sock.on("close", () => resolve(Buffer.concat(got)));
    sock.write(Buffer.concat([opening(), bytes, frame(FrameType.PING, 0, 0, ping)]));
  });
}

test("rapid reset: streams reset before they are answered close the session with ENHANCE_YOUR_CALM", async (t) => {
  const server = await h2Server(() => {}, { earlyResets: { burst: 5, perSecond: 1 } });
  t.teardown(() => server.close());
  const ids = [1, 3, 5, 7, 9, 11];
  t.is(await goawayCodeAfter(server.port, Buffer.concat([opening(), openAndReset(ids)])), ErrorCode.ENHANCE_YOUR_CALM);

  // Within the burst the session stays up: a PING after five early resets is answered.
  t.is(goawayCodeIn(await sendThenPing(t, server.port, openAndReset(ids.slice(0, 5)))), -1);
});

test("rapid reset: the session takes no new stream, but a stream it already answered goes on to the end", async (t) => {
  const keep = "10.0.0.9:80";
  const server = await h2Server(
    (stream, headers) => {
      if (headerRecord(headers)[":authority"] === keep) echo(stream);
    },
    { earlyResets: { burst: 5, perSecond: 1 } },
  );
  t.teardown(() => server.close());
  const client = await h2Client(server.port);
  t.teardown(() => client.destroy());
  const connect = (authority: string) =>
    client.request([
      [":method", "CONNECT"],
      [":authority", authority],
    ]);
  const kept = connect(keep);
  let answered!: () => void;
  const answer = new Promise<void>((resolve) => {
    answered = resolve;
  });
  const echoed = collect(kept, () => answered());
  await answer;
  const serverClosed = new Promise<Error | undefined>((resolve) => server.sessions[0]?.once("close", resolve));
  const goaway = new Promise<number>((resolve) => client.once("goaway", resolve));

  for (let i = 0; i < 6; i++) connect("10.0.0.1:80").reset();
  t.is(await goaway, ErrorCode.ENHANCE_YOUR_CALM);
  t.false(client.canRequest);

  kept.write(Buffer.from("still here"));
  kept.end();
  t.is((await echoed).toString(), "still here");
  const err = await serverClosed;
  t.true(err instanceof H2Error && err.h2code === ErrorCode.ENHANCE_YOUR_CALM, String(err));
});

test("rapid reset: resets of answered streams are not limited", async (t) => {
  const server = await h2Server((stream) => stream.respond(200), { earlyResets: { burst: 5, perSecond: 1 } });
  t.teardown(() => server.close());
  const ids = Array.from({ length: 50 }, (_, i) => 2 * i + 1);
  t.is(goawayCodeIn(await sendThenPing(t, server.port, openAndReset(ids))), -1);
  t.is(server.sessions[0]?.streamCount, 0);
});

test("a client session treats a frame on a server-opened stream id as a protocol error", async (t) => {
  // A raw server: its SETTINGS, then an RST_STREAM on stream 2, which no server may open while push is off.
  const raw = net.createServer((sock) => {
    sock.on("data", () => {});
    sock.write(Buffer.concat([frame(FrameType.SETTINGS, 0, 0), rst(2)]));
  });
  await new Promise<void>((resolve) => raw.listen(0, "127.0.0.1", resolve));
  t.teardown(() => raw.close());
  const session = await h2Client((raw.address() as net.AddressInfo).port);
  const closed = new Promise<Error | undefined>((resolve) => {
    session.once("close", resolve);
    // A session that lets it pass stays open; end the wait so the assertions below fail rather than hang.
    setTimeout(() => resolve(undefined), 5000).unref();
  });
  // Streams 1 and 3 are ours; 2 lies below them but was never the server's to open.
  session.request([
    [":method", "CONNECT"],
    [":authority", "10.0.0.1:80"],
  ]);
  session.request([
    [":method", "CONNECT"],
    [":authority", "10.0.0.1:81"],
  ]);
  const err = await closed;
  t.true(err instanceof H2Error);
  t.is((err as H2Error).h2code, ErrorCode.PROTOCOL_ERROR);
});

test("a large control frame sent a byte at a time costs each byte one copy (the reader joined it per read before)", async (t) => {
  // 512 KiB in 1-byte pushes: joining what had arrived on every push copied ~130 GB (minutes); filled in place, a
  // fraction of a second. The bound only catches the quadratic path.
  t.timeout(10_000);
  const length = 512 * KiB;
  const payload = Buffer.alloc(length, 0x5a);
  payload.writeUInt32BE(0xdeadbeef, length - 4);
  const wire = frame(0xfa, 0, 0, payload);
  const frames: Array<{ type: number; payload: Buffer }> = [];
  const reader = new FrameReader(
    {
      frame: (type, _flags, _stream, p) => frames.push({ type, payload: Buffer.from(p) }),
      dataStart: () => {},
      data: () => {},
      dataEnd: () => {},
    },
    1 << 20,
  );
  const shared = Buffer.alloc(1);
  for (let i = 0; i < wire.length; i++) {
    shared[0] = wire[i] as number;
    reader.push(shared);
    // Let the test's timeout fire while the reader works.
    if (i % 4096 === 0) await new Promise((r) => setImmediate(r));
  }
  t.is(frames.length, 1);
  t.is(frames[0]?.type, 0xfa);
  t.true(frames[0]?.payload.equals(payload));
});
