/**
 * Two H2Sessions over an in-memory transport pair, no sockets: what the data plane's poll loop will drive. Every
 * read lands in one buffer per side that is scribbled over after each receive (memory-transport.ts), so all of
 * these also check that nothing received is kept by reference past the call.
 */

import { randomBytes } from "node:crypto";
import { once } from "node:events";
import test from "ava";
import { ErrorCode, FrameType } from "../../../agent/h2/constants.js";
import { H2Error } from "../../../agent/h2/errors.js";
import type { HeaderList } from "../../../agent/h2/hpack.js";
import type { H2Session } from "../../../agent/h2/session.js";
import type { H2Stream, StreamHandlers } from "../../../agent/h2/stream.js";
import { headerRecord } from "../../../agent/h2/validate-headers.js";
import { type MemoryOptions, memoryPair } from "./memory-transport.js";
import { collect, sendAll, sha256 } from "./support.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const connect = (authority = "10.1.2.3:8080"): HeaderList => [
  [":method", "CONNECT"],
  [":authority", authority],
];

/** Handlers that ignore everything but what `over` sets. */
function quiet(over: Partial<StreamHandlers> = {}): StreamHandlers {
  return { data: () => {}, end: () => {}, reset: () => {}, drain: () => {}, close: () => {}, ...over };
}

/** Resolves once `check` holds (polled); rejects after `ms`, naming `what`. */
async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function closed(session: H2Session): Promise<Error | undefined> {
  return new Promise((resolve) => session.once("close", (err?: Error) => resolve(err)));
}

/** The response headers of a client stream, once they arrive. */
function answered(stream: H2Stream, over: Partial<StreamHandlers> = {}): Promise<Record<string, string>> {
  return new Promise((resolve) => stream.attach(quiet({ ...over, headers: (h) => resolve(headerRecord(h)) })));
}

test("CONNECT stream: opened, answered, data both ways, each side half-closes in turn, then a clean close", async (t) => {
  const { client, server } = memoryPair();
  const up = randomBytes(MiB + 123);
  const down = randomBytes(300 * KiB + 7);
  let request: Record<string, string> = {};
  const serverGot = new Promise<Buffer>((resolve) => {
    server.on("stream", (stream: H2Stream, headers: HeaderList) => {
      request = headerRecord(headers);
      stream.respond(200);
      // The client half-closes first; this side then still sends its whole answer on the half-closed stream.
      collect(stream).then((buf) => {
        resolve(buf);
        sendAll(stream, down);
      });
    });
  });
  const stream = client.request(connect());
  let status = "";
  const clientGot = collect(stream, (h) => {
    status = headerRecord(h)[":status"] ?? "";
  });
  const idle = once(client, "idle");
  await sendAll(stream, up);
  t.is(sha256(await serverGot), sha256(up));
  t.is(sha256(await clientGot), sha256(down));
  t.is(status, "200");
  t.is(request[":method"], "CONNECT");
  t.is(request[":authority"], "10.1.2.3:8080");
  await idle;
  t.is(client.streamCount, 0);
  t.is(server.streamCount, 0);
  t.true(stream.closed);

  const clientClosed = closed(client);
  const serverClosed = closed(server);
  client.close();
  t.is(await clientClosed, undefined);
  t.is(await serverClosed, undefined);
});

test("flow control: with a 16 KiB stream window the sender stops at 16 KiB and resumes on WINDOW_UPDATE", async (t) => {
  const { client, server, clientSide, serverSide } = memoryPair({ server: { settings: { streamWindow: 16 * KiB } } });
  const payload = randomBytes(256 * KiB);
  const chunks: Buffer[] = [];
  let received = 0;
  let reading = false;
  let serverStream: H2Stream | undefined;
  server.on("stream", (stream: H2Stream) => {
    serverStream = stream;
    stream.attach(
      quiet({
        data: (c) => {
          chunks.push(Buffer.from(c));
          received += c.length;
          if (reading) stream.consumed(c.length);
        },
      }),
    );
    stream.respond(200);
  });
  const stream = client.request(connect());
  let drains = 0;
  await answered(stream, { drain: () => drains++ });
  t.false(stream.write(payload), "a write beyond the window is accepted without back-pressure");

  // The server's app does not read: its window's worth comes, then nothing more.
  await until(() => received >= 16 * KiB, "the first 16 KiB");
  await sleep(200);
  t.is(received, 16 * KiB);
  const sentData = () =>
    clientSide.frames
      .filter((f) => f.type === FrameType.DATA && f.streamId === stream.id)
      .reduce((sum, f) => sum + f.length, 0);
  t.is(sentData(), 16 * KiB);
  t.is(drains, 0);

  // It reads: WINDOW_UPDATEs go out and the rest follows.
  reading = true;
  serverStream?.consumed(received);
  await until(() => received === payload.length, "the rest of the payload");
  t.is(sha256(Buffer.concat(chunks)), sha256(payload));
  t.is(drains, 1);
  const updates = serverSide.frames.filter((f) => f.type === FrameType.WINDOW_UPDATE && f.streamId === stream.id);
  // (256 - 16) KiB granted in steps of at least half the window.
  t.true(updates.length >= 1 && updates.length <= 30, `${updates.length} stream WINDOW_UPDATEs`);
  t.true(
    clientSide.frames.filter((f) => f.type === FrameType.DATA).every((f) => f.length <= 16 * KiB),
    "a DATA frame overran the 16 KiB window",
  );
  client.destroy();
});

/**
 * What a session must copy when its transport reuses the read buffer: a partial frame waiting for its next read
 * (tiny reads), a header block fragment waiting for its CONTINUATION (one frame per read), and DATA that arrives
 * before the stream's app attaches (both). Any of them kept by reference reads as 0xEE by the time it is used.
 */
const hazards: [string, MemoryOptions["reads"]][] = [
  ["reads of 1 to 13 bytes", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]],
  ["one frame per read", "frames"],
];
for (const [name, reads] of hazards) {
  test(`shared read buffer, ${name}: headers, held and streamed data arrive intact though the buffer is overwritten`, async (t) => {
    const { client, server, clientSide } = memoryPair({
      reads,
      server: { settings: { maxHeaderListSize: 64 * KiB } },
    });
    // 40 KB of header value: HEADERS plus two CONTINUATIONs at the default 16 KiB frame size.
    const big = randomBytes(30 * KiB).toString("base64");
    const up = randomBytes(200 * KiB + 5);
    const down = randomBytes(150 * KiB + 3);
    // Bytes read after being overwritten break the framing or HPACK: a session fails, and says why.
    const broken = new Promise<never>((_, reject) => {
      for (const s of [client, server]) s.once("close", (err?: Error) => reject(err ?? new Error(`${s.role} closed`)));
    });
    broken.catch(() => {});
    const got = new Promise<{ headers: Record<string, string>; data: Buffer }>((resolve, reject) => {
      server.on("stream", (stream: H2Stream, headers: HeaderList) => {
        stream.respond(200);
        // The app attaches late, as the proxy does after connecting upstream: the first data waits in the stream.
        setTimeout(() => {
          collect(stream).then((data) => resolve({ headers: headerRecord(headers), data }), reject);
          sendAll(stream, down);
        }, 50);
      });
    });
    const stream = client.request([...connect(), ["x-big", big]]);
    const clientGot = collect(stream);
    await Promise.race([sendAll(stream, up), broken]);
    const { headers, data } = await Promise.race([got, broken]);
    t.is(headers["x-big"], big);
    t.is(sha256(data), sha256(up));
    t.is(sha256(await Promise.race([clientGot, broken])), sha256(down));
    t.true(
      clientSide.frames.some((f) => f.type === FrameType.CONTINUATION),
      "the header block was not split",
    );
    t.false(client.destroyed);
    t.false(server.destroyed);
    client.destroy();
  });
}

test("a transport that reports back-pressure: DATA waits (control frames do not) and resumes on drained()", async (t) => {
  const highWater = 256 * KiB;
  const windows = { streamWindow: 4 * MiB, connectionWindow: 16 * MiB };
  const { client, server, clientSide } = memoryPair({
    highWater,
    client: { settings: windows },
    server: { settings: windows },
  });
  const serverGot = new Promise<Buffer>((resolve) => {
    server.on("stream", (stream: H2Stream) => {
      stream.respond(200);
      if (server.streamCount > 1) stream.attach(quiet());
      else
        collect(stream).then((buf) => {
          resolve(buf);
          stream.end();
        });
    });
  });
  const stream = client.request(connect());
  const clientGot = collect(stream);
  await until(() => server.streamCount === 1, "the stream to open");
  await sleep(20);

  clientSide.pause();
  const payload = randomBytes(8 * MiB);
  const sent = sendAll(stream, payload);
  await sleep(100);
  const stuck = clientSide.queuedBytes;
  // The session stops at the transport's mark, give or take one batch of frames (64 KiB) and a frame.
  t.true(stuck >= highWater, `only ${stuck} bytes queued`);
  t.true(stuck < highWater + 100 * KiB, `${stuck} bytes queued past a ${highWater}-byte mark`);
  t.true(stream.outboxBytes > 0, "the stream holds nothing back");

  // A new stream's HEADERS still goes out while DATA waits.
  const second = client.request(connect("10.1.2.4:80"));
  second.attach(quiet());
  await sleep(20);
  const grown = clientSide.queuedBytes - stuck;
  t.true(grown > 0 && grown < 100, `queue grew by ${grown} bytes for one HEADERS frame`);

  clientSide.resume();
  await sent;
  t.is(sha256(await serverGot), sha256(payload));
  t.true(clientSide.maxQueued < highWater + 100 * KiB, `${clientSide.maxQueued} bytes were queued at most`);
  t.is((await clientGot).length, 0);
  client.destroy();
});

test("rapid reset over the in-memory transport: GOAWAY(ENHANCE_YOUR_CALM) at the limit; an answered stream finishes", async (t) => {
  const { client, server } = memoryPair({ server: { earlyResets: { burst: 10, perSecond: 1 } } });
  let opened = 0;
  server.on("stream", (stream: H2Stream) => {
    opened++;
    if (opened > 1) {
      // Never answered: the app connection is "still connecting" when the client resets.
      stream.attach(quiet());
      return;
    }
    stream.respond(200);
    collect(stream).then((buf) => sendAll(stream, buf));
  });
  const keeper = client.request(connect());
  let keeperStatus = "";
  const echoed = collect(keeper, (h) => {
    keeperStatus = headerRecord(h)[":status"] ?? "";
  });
  await until(() => keeperStatus === "200", "the first stream's answer");

  const goaway = once(client, "goaway");
  const serverClosed = closed(server);
  let resets = 0;
  while (client.canRequest && resets < 1000) {
    const s = client.request(connect("10.9.9.9:80"));
    s.attach(quiet());
    s.reset();
    resets++;
    await new Promise((r) => setImmediate(r));
  }
  const [code] = (await goaway) as [number];
  t.is(code, ErrorCode.ENHANCE_YOUR_CALM);
  // 10 allowed at once, the 11th trips it; a few more leave before the GOAWAY is read.
  t.true(resets >= 11 && resets <= 20, `${resets} streams reset before the client saw GOAWAY`);
  t.false(client.canRequest);

  // The stream answered before the abuse goes on to the end; then the server closes with the reason.
  const payload = randomBytes(300 * KiB);
  await sendAll(keeper, payload);
  t.is(sha256(await echoed), sha256(payload));
  const err = await serverClosed;
  t.true(err instanceof H2Error && err.h2code === ErrorCode.ENHANCE_YOUR_CALM, `closed with ${String(err)}`);
});
