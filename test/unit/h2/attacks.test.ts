/**
 * The known HTTP/2 attack classes, played by a raw peer over loopback TCP against a server session (a compromised
 * workload with a valid certificate is the attacker; TLS changes nothing here). Each test checks the answer (the
 * GOAWAY code, or the stream's refusal), what the attack could make the session hold, and that an honest session
 * on the same server keeps working.
 */
import net from "node:net";
import v8 from "node:v8";
import vm from "node:vm";
import test, { type ExecutionContext } from "ava";
import { ErrorCode, Flag, FrameType, MAX_WINDOW, Setting } from "../../../agent/h2/constants.js";
import { H2Error } from "../../../agent/h2/errors.js";
import { encodeHeaders, type HeaderList } from "../../../agent/h2/hpack.js";
import type { H2Session, SessionOptions } from "../../../agent/h2/session.js";
import type { H2Stream } from "../../../agent/h2/stream.js";
import { headerRecord } from "../../../agent/h2/validate-headers.js";
import { within } from "../../support/within.js";
import { collect, echo, frame, h2Client, h2Server, preface, sendAll } from "./support.js";

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

/** Heap in use after a full collection: what is still held. */
function heldHeap(): number {
  // Twice: external memory (Buffers) is released by the collection after the one that found it unreachable.
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Seen {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

function parseFrames(bytes: Buffer): Seen[] {
  const out: Seen[] = [];
  for (let pos = 0; pos + 9 <= bytes.length; ) {
    const length = bytes.readUIntBE(pos, 3);
    if (pos + 9 + length > bytes.length) break;
    out.push({
      type: bytes[pos + 3] as number,
      flags: bytes[pos + 4] as number,
      streamId: bytes.readUInt32BE(pos + 5) & 0x7fffffff,
      payload: bytes.subarray(pos + 9, pos + 9 + length),
    });
    pos += 9 + length;
  }
  return out;
}

const goawayOf = (frames: Seen[]) => frames.find((f) => f.type === FrameType.GOAWAY)?.payload.readUInt32BE(4) ?? -1;

interface Outcome {
  /** What the server sent, as frames. */
  frames: Seen[];
  /** The server closed the connection (else `ms` passed). */
  closed: boolean;
  /** The server session's close error. */
  error: Error | undefined;
}

/**
 * A raw client: sends the preface, an empty SETTINGS and `bytes`, then collects what the server sends until it
 * closes the connection or `ms` pass (a server that lets the attack pass never closes).
 */
async function attack(server: { port: number; sessions: H2Session[] }, bytes: Buffer, ms = 3000): Promise<Outcome> {
  const index = server.sessions.length;
  const sock = net.connect(server.port, "127.0.0.1");
  const chunks: Buffer[] = [];
  sock.on("data", (c: Buffer) => chunks.push(c));
  // The server may close while we still write (that is the point): EPIPE / ECONNRESET are expected.
  sock.on("error", () => {});
  await new Promise<void>((resolve) => sock.once("connect", resolve));
  const deadline = Date.now() + 2000;
  while (server.sessions.length <= index && Date.now() < deadline) await sleep(2);
  let error: Error | undefined;
  server.sessions[index]?.once("close", (err?: Error) => {
    error = err;
  });
  sock.write(Buffer.concat([preface, frame(FrameType.SETTINGS, 0, 0), bytes]));
  const closed = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    sock.once("close", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  sock.destroy();
  return { frames: parseFrames(Buffer.concat(chunks)), closed, error };
}

/**
 * The session ended by a connection error `code`. Its GOAWAY is written before the close, but a peer still writing
 * when the server closes gets a RST (the server leaves its bytes unread), which may drop the GOAWAY before it is
 * read: on the wire it is checked when it arrived.
 */
function closedWith(t: ExecutionContext, r: Outcome, code: number): void {
  t.true(r.closed, "the server closed the connection");
  t.true(r.error instanceof H2Error && r.error.h2code === code, `session closed by ${r.error}`);
  const wire = goawayOf(r.frames);
  t.true(wire === code || wire === -1, `GOAWAY ${wire}`);
}

const connect = (extra: HeaderList = []): HeaderList => [
  [":method", "CONNECT"],
  [":authority", "10.0.0.1:80"],
  ...extra,
];

/** An honest client session's round trip through the server: it must work while (and after) another is attacked. */
async function honestRoundTrip(t: ExecutionContext, port: number): Promise<void> {
  const session = await h2Client(port);
  t.teardown(() => session.destroy());
  const stream = session.request(connect());
  const echoed = collect(stream);
  stream.write(Buffer.from("honest"));
  stream.end();
  t.is((await within(echoed, 3000, "honest round trip")).toString(), "honest");
  t.false(session.destroyed);
}

async function echoServer(t: ExecutionContext, opts: Partial<SessionOptions> = {}, seen: HeaderList[] = []) {
  const server = await h2Server((stream, headers) => {
    seen.push(headers);
    // What the HBONE server does with a request first: a record of it (repeated names joined).
    headerRecord(headers);
    echo(stream);
  }, opts);
  t.teardown(() => server.close());
  return server;
}

const headers = (id: number, list: HeaderList | Buffer, flags: number = Flag.END_HEADERS) =>
  frame(FrameType.HEADERS, flags, id, Buffer.isBuffer(list) ? list : encodeHeaders(list));

/** HPACK "literal with incremental indexing, new name": the field enters the peer's dynamic table. */
function indexed(name: string, value: string): Buffer {
  const lit = (s: string) => {
    const b = Buffer.from(s, "latin1");
    if (b.length < 127) return Buffer.concat([Buffer.from([b.length]), b]);
    const len: number[] = [127];
    let rest = b.length - 127;
    while (rest >= 128) {
      len.push((rest % 128) + 128);
      rest = Math.floor(rest / 128);
    }
    len.push(rest);
    return Buffer.concat([Buffer.from(len), b]);
  };
  return Buffer.concat([Buffer.from([0x40]), lit(name), lit(value)]);
}

// 1. Decoded header list size and field count.

test.serial(
  "an HPACK bomb (1-byte references to a 4 KiB table entry) is refused with 431 before it expands; the table stays in step",
  async (t) => {
    const seen: HeaderList[] = [];
    const server = await echoServer(t, {}, seen);
    const big = "x".repeat(4000);
    // Stream 1 puts a 4 KiB field in the table (entry 62) and is served. Stream 3's block is 15,000 references to
    // it: 15 KiB on the wire, 60 MB decoded. Its last field enters the table too: stream 5 then refers to it (62),
    // which decodes right only if the refused block was processed to its end.
    const bomb = Buffer.concat([encodeHeaders(connect()), Buffer.alloc(15_000, 0xbe), indexed("x-after", "in step")]);
    const wire = Buffer.concat([
      headers(1, Buffer.concat([encodeHeaders(connect()), indexed("x-big", big)])),
      headers(3, bomb),
      headers(5, Buffer.concat([encodeHeaders(connect()), Buffer.from([0xbe])])),
      frame(FrameType.PING, 0, 0, Buffer.from("8-bytes!")),
    ]);
    const before = heldHeap();
    const { frames } = await attack(server, wire, 1000);
    const grown = heldHeap() - before;

    const on3 = frames.filter((f) => f.streamId === 3);
    t.deepEqual(
      on3.map((f) => f.type),
      [FrameType.HEADERS, FrameType.RST_STREAM],
      "stream 3: a 431 response, then RST_STREAM",
    );
    t.true(on3[0]?.payload.equals(encodeHeaders([[":status", "431"]])), "the refusal is :status 431");
    t.is(on3[1]?.payload.readUInt32BE(0), ErrorCode.NO_ERROR);
    t.is(goawayOf(frames), -1, "the session stays up");
    t.true(frames.some((f) => f.type === FrameType.PING && f.flags & Flag.ACK));
    // What reached the app: streams 1 and 5, each within the 16 KiB list limit, never the 60 MB.
    const decoded = seen.map((list) => list.reduce((n, [k, v]) => n + k.length + v.length + 32, 0));
    t.is(seen.length, 2, `streams served: ${seen.length}`);
    t.true(Math.max(...decoded) <= 16 * KiB, `largest list handed up: ${Math.max(...decoded)} bytes`);
    t.deepEqual(seen[1]?.at(-1), ["x-after", "in step"]);
    t.true(grown < 8 * MiB, `heap grew by ${(grown / MiB).toFixed(1)} MiB over the attack`);
    t.log(`heap delta over the attack: ${(grown / MiB).toFixed(2)} MiB`);
    await honestRoundTrip(t, server.port);
  },
);

test("a header block of more than 100 fields is refused with 431; 100 are served", async (t) => {
  const seen: HeaderList[] = [];
  const server = await echoServer(t, {}, seen);
  const fields = (n: number): HeaderList => connect(Array.from({ length: n - 2 }, (_, i) => [`x-${i}`, "v"]));
  const { frames } = await attack(
    server,
    Buffer.concat([
      headers(1, fields(100)),
      headers(3, fields(101)),
      frame(FrameType.PING, 0, 0, Buffer.from("8-bytes!")),
    ]),
    1000,
  );
  t.deepEqual(
    seen.map((l) => l.length),
    [100],
  );
  t.true(frames.some((f) => f.streamId === 3 && f.type === FrameType.HEADERS && f.flags & Flag.END_STREAM));
  t.is(goawayOf(frames), -1);
});

/**
 * A client session to a raw destination that answers the n-th HEADERS it reads (stream `id`) with `answer(n, id)`'s
 * bytes: what no honest server would send.
 */
async function rawDestination(t: ExecutionContext, answer: (answered: number, id: number) => Buffer) {
  const raw = net.createServer((sock) => {
    let answered = 0;
    const got: Buffer[] = [];
    sock.on("error", () => {});
    sock.on("data", (c: Buffer) => {
      got.push(c);
      const all = Buffer.concat(got);
      const frames = parseFrames(all.subarray(all.indexOf(preface) === 0 ? preface.length : 0));
      const requests = frames.filter((f) => f.type === FrameType.HEADERS);
      for (; answered < requests.length; answered++)
        sock.write(answer(answered, (requests[answered] as Seen).streamId));
    });
    sock.write(frame(FrameType.SETTINGS, 0, 0));
  });
  await new Promise<void>((resolve) => raw.listen(0, "127.0.0.1", resolve));
  t.teardown(() => raw.close());
  const session = await h2Client((raw.address() as net.AddressInfo).port);
  t.teardown(() => session.destroy());
  return session;
}

test("a client cancels a response whose header list is over its limit, and the session goes on", async (t) => {
  // On the client's first HEADERS, a response of 20,000 bytes decoded (under the encoded limit thanks to the
  // table), then an honest answer to the second stream.
  const session = await rawDestination(t, (answered, id) =>
    headers(
      id,
      answered === 0
        ? Buffer.concat([
            encodeHeaders([[":status", "200"]]),
            indexed("x-big", "y".repeat(4000)),
            Buffer.alloc(4, 0xbe),
          ])
        : encodeHeaders([[":status", "200"]]),
    ),
  );
  const reset = new Promise<number>((resolve) =>
    session.request(connect()).attach({
      headers: () => resolve(-1),
      data: () => {},
      end: () => {},
      reset: resolve,
      drain: () => {},
      close: () => {},
    }),
  );
  t.is(await within(reset, 3000, "first stream"), ErrorCode.CANCEL);
  const status = new Promise<string>((resolve, reject) =>
    session.request(connect()).attach({
      headers: (h) => resolve(headerRecord(h)[":status"] ?? ""),
      data: () => {},
      end: () => {},
      reset: (code) => reject(new Error(`reset ${code}`)),
      drain: () => {},
      close: () => {},
    }),
  );
  t.is(await within(status, 3000, "second stream"), "200");
  t.false(session.destroyed);
});

// 2. CONTINUATION flood.

test.serial(
  "CONTINUATION flood: endless zero-length CONTINUATIONs end the session with ENHANCE_YOUR_CALM, holding nothing",
  async (t) => {
    const server = await echoServer(t);
    const open = headers(1, encodeHeaders(connect()).subarray(0, 3), 0);
    // 200,000 empty CONTINUATIONs on stream 1, written in place (no garbage to blur the heap figure).
    const flood = Buffer.alloc(9 * 200_000);
    for (let pos = 0; pos < flood.length; pos += 9) {
      flood[pos + 3] = FrameType.CONTINUATION;
      flood.writeUInt32BE(1, pos + 5);
    }
    const before = heldHeap();
    const outcome = await attack(server, Buffer.concat([open, flood]), 3000);
    const grown = heldHeap() - before;
    closedWith(t, outcome, ErrorCode.ENHANCE_YOUR_CALM);
    t.true(grown < 4 * MiB, `heap grew by ${(grown / MiB).toFixed(1)} MiB over the attack`);
    t.log(`heap delta over 200,000 empty CONTINUATIONs: ${(grown / MiB).toFixed(2)} MiB`);
    await honestRoundTrip(t, server.port);
  },
);

test("a header block left unfinished is dropped after headerBlockTimeoutMs; 17 frames are still one block", async (t) => {
  const server = await echoServer(t, { headerBlockTimeoutMs: 300 });
  const block = encodeHeaders(connect());
  const started = Date.now();
  closedWith(t, await attack(server, headers(1, block.subarray(0, 3), 0), 3000), ErrorCode.ENHANCE_YOUR_CALM);
  t.true(Date.now() - started < 2000);

  // One HEADERS and 16 CONTINUATIONs, one byte each at the end: an odd split, within the limit.
  const split = [headers(1, block.subarray(0, block.length - 16), 0)];
  for (let i = 16; i > 0; i--) {
    const at = block.length - i;
    split.push(frame(FrameType.CONTINUATION, i === 1 ? Flag.END_HEADERS : 0, 1, block.subarray(at, at + 1)));
  }
  const ok = await attack(server, Buffer.concat([...split, frame(FrameType.PING, 0, 0, Buffer.alloc(8))]), 500);
  t.is(goawayOf(ok.frames), -1);
  t.true(
    ok.frames.some((f) => f.streamId === 1 && f.type === FrameType.HEADERS),
    "stream 1 answered",
  );
});

// 3. Floods of frames that cost a reply or work and move nothing forward.

const many = (n: number, f: Buffer) => Buffer.concat(Array.from({ length: n }, () => f));
const windowUpdate = (id: number, n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return frame(FrameType.WINDOW_UPDATE, 0, id, b);
};

const floods: [string, Buffer][] = [
  ["PING", many(5000, frame(FrameType.PING, 0, 0, Buffer.alloc(8)))],
  ["SETTINGS", many(5000, frame(FrameType.SETTINGS, 0, 0))],
  ["empty DATA", Buffer.concat([headers(1, connect()), many(5000, frame(FrameType.DATA, 0, 1))])],
  ["PRIORITY", many(5000, frame(FrameType.PRIORITY, 0, 1, Buffer.alloc(5)))],
  ["1-byte WINDOW_UPDATE", Buffer.concat([headers(1, connect()), many(5000, windowUpdate(1, 1))])],
  ["unknown frame type", many(5000, frame(0xfa, 0, 0))],
  [
    "SETTINGS of 33 entries",
    frame(FrameType.SETTINGS, 0, 0, many(33, Buffer.from([0, Setting.ENABLE_PUSH, 0, 0, 0, 0]))),
  ],
];

for (const [kind, wire] of floods) {
  test(`${kind} flood: GOAWAY ENHANCE_YOUR_CALM at the budget, replies bounded; another session works`, async (t) => {
    const server = await echoServer(t);
    const outcome = await attack(server, wire);
    closedWith(t, outcome, ErrorCode.ENHANCE_YOUR_CALM);
    const replies = outcome.frames.filter((f) => f.type === FrameType.PING || f.type === FrameType.SETTINGS).length;
    // The budget's burst is 1000, and it refills at 100/s while the flood is read: replies stay near that.
    t.true(replies <= 1010, `${replies} replies`);
    await honestRoundTrip(t, server.port);
  });
}

test("what an honest peer sends stays within the budget: 500 PINGs at once; an 8 MiB echo between ambit sessions", async (t) => {
  const server = await echoServer(t);
  const { frames } = await attack(server, many(500, frame(FrameType.PING, 0, 0, Buffer.alloc(8))), 500);
  t.is(goawayOf(frames), -1);
  t.is(frames.filter((f) => f.type === FrameType.PING).length, 500);

  // ambit's own client moving 8 MiB through an echo: its WINDOW_UPDATEs and SETTINGS must not count against it.
  const session = await h2Client(server.port);
  t.teardown(() => session.destroy());
  const stream = session.request(connect());
  const echoed = collect(stream);
  const data = Buffer.alloc(8 * MiB, 7);
  await sendAll(stream, data);
  t.is((await within(echoed, 10_000, "8 MiB echo")).length, data.length);
  t.false(session.destroyed);
});

// 4. Zero-window slow read.

/** A server whose app sends as fast as the stream takes it (as the data plane's relay does): write until false, resume on drain. */
async function sendingServer(t: ExecutionContext, opts: Partial<SessionOptions>) {
  const state = { streams: [] as H2Stream[], resets: [] as number[], maxOutbox: 0, written: 0 };
  const server = await h2Server((stream, list) => {
    if (headerRecord(list)[":authority"] !== "10.0.0.9:80") {
      echo(stream);
      return;
    }
    state.streams.push(stream);
    const chunk = Buffer.alloc(64 * KiB, 1);
    const pump = () => {
      while (!stream.closed) {
        state.written += chunk.length;
        const ok = stream.write(chunk);
        state.maxOutbox = Math.max(state.maxOutbox, stream.outboxBytes);
        if (!ok) return;
      }
    };
    stream.attach({
      data: (c) => stream.consumed(c.length),
      end: () => {},
      reset: (code) => state.resets.push(code),
      drain: pump,
      close: () => {},
    });
    stream.respond(200);
    pump();
  }, opts);
  t.teardown(() => server.close());
  return { server, state };
}

const settingsFrame = (entries: [number, number][]) => {
  const b = Buffer.alloc(entries.length * 6);
  entries.forEach(([id, v], i) => {
    b.writeUInt16BE(id, i * 6);
    b.writeUInt32BE(v, i * 6 + 2);
  });
  return frame(FrameType.SETTINGS, 0, 0, b);
};
const slowReader = connect().map(([k, v]): [string, string] => (k === ":authority" ? [k, "10.0.0.9:80"] : [k, v]));

test("zero stream window: the data held is one write, and the stream is reset after stallTimeoutMs", async (t) => {
  const { server, state } = await sendingServer(t, { stallTimeoutMs: 400 });
  const { frames } = await attack(
    server,
    Buffer.concat([settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 0]]), headers(1, slowReader)]),
    1500,
  );
  t.deepEqual(state.resets, [ErrorCode.CANCEL], "the app saw its stream reset");
  t.true(
    frames.some(
      (f) => f.type === FrameType.RST_STREAM && f.streamId === 1 && f.payload.readUInt32BE(0) === ErrorCode.CANCEL,
    ),
  );
  t.is(goawayOf(frames), -1, "only the stream ends");
  t.true(state.maxOutbox <= 64 * KiB, `held ${state.maxOutbox} bytes`);
  t.is(state.written, 64 * KiB, "the app was stopped after its first write");
  t.log(`held for the stalled stream: ${state.maxOutbox} bytes`);
  await honestRoundTrip(t, server.port);
});

test("zero connection window: the session is closed (ENHANCE_YOUR_CALM) after stallTimeoutMs", async (t) => {
  const { server, state } = await sendingServer(t, { stallTimeoutMs: 400 });
  const { frames, closed } = await attack(
    server,
    Buffer.concat([settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 16 * MiB]]), headers(1, slowReader)]),
    2000,
  );
  t.true(closed);
  t.is(goawayOf(frames), ErrorCode.ENHANCE_YOUR_CALM);
  const sent = frames.filter((f) => f.type === FrameType.DATA).reduce((n, f) => n + f.payload.length, 0);
  t.is(sent, 65_535, "the connection window's worth, no more");
  t.true(state.maxOutbox <= 64 * KiB, `held ${state.maxOutbox} bytes`);
  await honestRoundTrip(t, server.port);
});

test("a slow reader that keeps opening its window is never cut", async (t) => {
  const { server, state } = await sendingServer(t, { stallTimeoutMs: 300 });
  const sock = net.connect(server.port, "127.0.0.1");
  t.teardown(() => sock.destroy());
  const got: Buffer[] = [];
  sock.on("data", (c: Buffer) => got.push(c));
  await new Promise<void>((resolve) => sock.once("connect", resolve));
  sock.write(
    Buffer.concat([
      preface,
      settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 4 * KiB]]),
      headers(1, slowReader),
      windowUpdate(0, 10 * MiB),
    ]),
  );
  // 4 KiB every 150 ms, half the stall timeout: 1.2 s in all, four timeouts' worth.
  for (let i = 0; i < 8; i++) {
    await sleep(150);
    sock.write(windowUpdate(1, 4 * KiB));
  }
  const frames = parseFrames(Buffer.concat(got));
  t.deepEqual(state.resets, []);
  t.is(goawayOf(frames), -1);
  t.false(frames.some((f) => f.type === FrameType.RST_STREAM));
  t.true(frames.filter((f) => f.type === FrameType.DATA).reduce((n, f) => n + f.payload.length, 0) >= 32 * KiB);
});

// 5. Stream ids and concurrency.

test("a client session at the end of the stream ids refuses a new stream, finishes its own, then closes", async (t) => {
  const server = await echoServer(t);
  const session = await h2Client(server.port, { firstStreamId: MAX_WINDOW - 2 });
  t.teardown(() => session.destroy());
  const closed = new Promise<Error | undefined>((resolve) => session.once("close", resolve));
  const a = session.request(connect());
  t.true(session.canRequest);
  const b = session.request(connect());
  t.is(b.id, MAX_WINDOW);
  t.false(session.canRequest, "no id is left");
  const err = t.throws(() => session.request(connect()), { instanceOf: H2Error });
  t.is((err as H2Error).h2code, ErrorCode.REFUSED_STREAM);
  t.regex((err as H2Error).message, /used up/);
  const echoes = [a, b].map((s, i) => {
    const got = collect(s);
    s.write(Buffer.from(`s${i}`));
    s.end();
    return got;
  });
  t.deepEqual((await within(Promise.all(echoes), 3000, "both echoes")).map(String), ["s0", "s1"]);
  t.is(await within(closed, 3000, "the exhausted session closes"), undefined);
});

test("a server takes stream ids only upward: a lower id than the last is PROTOCOL_ERROR", async (t) => {
  const server = await echoServer(t);
  closedWith(
    t,
    await attack(server, Buffer.concat([headers(5, connect()), headers(3, connect())])),
    ErrorCode.PROTOCOL_ERROR,
  );
});

test("MAX_CONCURRENT_STREAMS: the server refuses streams past it (REFUSED_STREAM) and goes on; a client never passes it", async (t) => {
  const server = await echoServer(t, { settings: { maxConcurrentStreams: 2 } });
  const { frames } = await attack(
    server,
    Buffer.concat([
      ...[1, 3, 5, 7, 9].map((id) => headers(id, connect())),
      frame(FrameType.PING, 0, 0, Buffer.alloc(8)),
    ]),
    500,
  );
  const refused = frames
    .filter((f) => f.type === FrameType.RST_STREAM && f.payload.readUInt32BE(0) === ErrorCode.REFUSED_STREAM)
    .map((f) => f.streamId);
  t.deepEqual(refused, [5, 7, 9]);
  t.is(goawayOf(frames), -1);
  t.true(frames.some((f) => f.type === FrameType.PING && f.flags & Flag.ACK));

  const session = await h2Client(server.port);
  t.teardown(() => session.destroy());
  // Once the server's SETTINGS are in (the first answer), the client holds to 2.
  const first = session.request(connect());
  // Reset when the test ends: that rejection is expected.
  await within(new Promise<void>((resolve) => collect(first, () => resolve()).catch(() => {})), 3000, "first answer");
  session.request(connect());
  t.false(session.canRequest);
  const err = t.throws(() => session.request(connect()), { instanceOf: H2Error });
  t.is((err as H2Error).h2code, ErrorCode.REFUSED_STREAM);
  t.is(session.streamCount, 2);
});

test("a response status that is not three digits resets its stream; endless 1xx responses close the session", async (t) => {
  // The first stream gets `:status 2000`, the second 5,000 informational answers and no final one.
  const session = await rawDestination(t, (answered, id) => {
    if (answered === 0) return headers(id, encodeHeaders([[":status", "2000"]]));
    const informational = headers(id, encodeHeaders([[":status", "100"]]));
    return Buffer.concat(Array.from({ length: 5000 }, () => informational));
  });
  const outcome = () =>
    new Promise<string>((resolve) =>
      session.request(connect()).attach({
        headers: (h) => resolve(`status ${headerRecord(h)[":status"]}`),
        data: () => {},
        end: () => {},
        reset: (code) => resolve(`reset ${code}`),
        drain: () => {},
        close: () => {},
      }),
    );
  t.is(await within(outcome(), 3000, "first stream"), `reset ${ErrorCode.PROTOCOL_ERROR}`);
  const closed = new Promise<Error | undefined>((resolve) => session.once("close", resolve));
  void outcome();
  const err = await within(closed, 5000, "the session's close");
  t.true(err instanceof H2Error && err.h2code === ErrorCode.ENHANCE_YOUR_CALM, `closed by ${err}`);
});
