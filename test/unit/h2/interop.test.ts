/**
 * ambit's HTTP/2 against Node's own (nghttp2), a real independent implementation: Huffman and dynamic-table
 * headers, flow control with default windows, CONNECT semantics, resets and GOAWAY.
 */
import http2 from "node:http2";
import net from "node:net";
import test from "ava";
import { ErrorCode, FrameType } from "../../../agent/h2/constants.js";
import { headerRecord } from "../../../agent/h2/validate-headers.js";
import { collect, frame, goawayCodeAfter, h2Client, h2Server, preface, sendAll, sha256 } from "./support.js";

const MiB = 1024 * 1024;

test("nghttp2 client -> ambit server: CONNECT streams echo 4 MiB each, headers decoded (Huffman, dynamic table)", async (t) => {
  const seen: Record<string, string>[] = [];
  const server = await h2Server((stream, headers) => {
    seen.push(headerRecord(headers));
    stream.respond(200);
    // Echo: everything the client sent, once it has ended its side. A reset simply ends the test's stream.
    collect(stream).then(
      (data) => sendAll(stream, data),
      () => {},
    );
  });
  t.teardown(() => server.close());
  // nghttp2 counts all three requests queued for sending against its session memory cap (10 MB by default).
  const client = http2.connect(`http://127.0.0.1:${server.port}`, { maxSessionMemory: 64 });
  t.teardown(() => client.destroy());
  const one = async (i: number) => {
    const payload = Buffer.alloc(4 * MiB, i);
    const req = client.request({
      ":method": "CONNECT",
      ":authority": `10.1.2.${i}:8080`,
      baggage: "k8s.namespace.name=default,k8s.workload.name=client",
    });
    const status = new Promise<number>((resolve) => req.once("response", (h) => resolve(Number(h[":status"]))));
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    const ended = new Promise<void>((resolve, reject) => {
      req.once("end", resolve);
      req.once("error", reject);
    });
    req.end(payload);
    t.is(await status, 200);
    await ended;
    t.is(sha256(Buffer.concat(chunks)), sha256(payload));
  };
  await Promise.all([1, 2, 3].map(one));
  t.is(seen.length, 3);
  for (const [i, h] of seen.entries()) {
    t.is(h[":method"], "CONNECT");
    t.regex(h[":authority"] ?? "", /^10\.1\.2\.[123]:8080$/, String(i));
    t.is(h.baggage, "k8s.namespace.name=default,k8s.workload.name=client");
  }
});

test("ambit client -> nghttp2 server: 8 MiB each way through 64 KiB default windows", async (t) => {
  const server = http2.createServer();
  server.on("stream", (stream, headers) => {
    t.is(headers[":method"], "CONNECT");
    stream.respond({ ":status": 200 });
    stream.pipe(stream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(() => server.close());
  const session = await h2Client((server.address() as net.AddressInfo).port);
  t.teardown(() => session.destroy());
  const stream = session.request([
    [":method", "CONNECT"],
    [":authority", "10.0.0.1:80"],
  ]);
  let status = "";
  const payload = Buffer.alloc(8 * MiB);
  for (let i = 0; i < payload.length; i += 4096) payload[i] = i % 251;
  const received = collect(stream, (h) => {
    status = headerRecord(h)[":status"] ?? "";
  });
  await sendAll(stream, payload);
  t.is(sha256(await received), sha256(payload));
  t.is(status, "200");
});

test("ambit client <-> ambit server: 200 concurrent streams, resets and refusals propagate", async (t) => {
  const server = await h2Server(
    (stream, headers) => {
      const h = headerRecord(headers);
      if (h[":authority"] === "refuse:1") {
        stream.respond(503, true);
        return;
      }
      stream.respond(200);
      stream.attach({
        data: (c) => {
          stream.consumed(c.length);
          if (c.includes("reset-me")) stream.reset(ErrorCode.CONNECT_ERROR);
          else stream.write(Buffer.from(c));
        },
        end: () => stream.end(),
        reset: () => {},
        drain: () => {},
        close: () => {},
      });
    },
    { settings: { maxConcurrentStreams: 1000 } },
  );
  t.teardown(() => server.close());
  const session = await h2Client(server.port, { settings: { streamWindow: 1 * MiB, connectionWindow: 8 * MiB } });
  t.teardown(() => session.destroy());
  const open = (authority: string) =>
    session.request([
      [":method", "CONNECT"],
      [":authority", authority],
    ]);
  const echoes = Array.from({ length: 200 }, async (_, i) => {
    const s = open(`10.0.0.${i % 250}:80`);
    const got = collect(s);
    s.write(Buffer.from(`hello ${i}`));
    s.end();
    return (await got).toString();
  });
  t.deepEqual(
    await Promise.all(echoes),
    Array.from({ length: 200 }, (_, i) => `hello ${i}`),
  );
  const refused = open("refuse:1");
  let status = "";
  await collect(refused, (h) => {
    status = headerRecord(h)[":status"] ?? "";
  });
  t.is(status, "503");
  const reset = open("10.0.0.1:80");
  const resetResult = collect(reset);
  reset.write(Buffer.from("please reset-me"));
  await t.throwsAsync(resetResult, { message: `reset ${ErrorCode.CONNECT_ERROR}` });
  t.is(session.streamCount, 1, "only the refused stream's half stays open until the client ends it");
});

test("garbage and protocol violations end the connection with GOAWAY and the right error code", async (t) => {
  const server = await h2Server(() => {}, { settings: { maxFrameSize: 16384 } });
  t.teardown(() => server.close());
  const goawayCode = (bytes: Buffer) => goawayCodeAfter(server.port, bytes);
  const settings = frame(FrameType.SETTINGS, 0, 0);
  t.is(await goawayCode(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n")), ErrorCode.PROTOCOL_ERROR);
  t.is(
    await goawayCode(Buffer.concat([preface, frame(FrameType.PING, 0, 0, Buffer.alloc(8))])),
    ErrorCode.PROTOCOL_ERROR,
  );
  t.is(
    await goawayCode(Buffer.concat([preface, settings, frame(FrameType.DATA, 0, 1, Buffer.alloc(20000))])),
    ErrorCode.FRAME_SIZE_ERROR,
  );
  t.is(
    await goawayCode(Buffer.concat([preface, settings, frame(FrameType.DATA, 0, 1, Buffer.alloc(10))])),
    ErrorCode.PROTOCOL_ERROR,
  );
  const bigIncrement = Buffer.alloc(4);
  bigIncrement.writeUInt32BE(0x7fffffff);
  t.is(
    await goawayCode(Buffer.concat([preface, settings, frame(FrameType.WINDOW_UPDATE, 0, 0, bigIncrement)])),
    ErrorCode.FLOW_CONTROL_ERROR,
  );
  t.is(
    await goawayCode(Buffer.concat([preface, settings, frame(FrameType.HEADERS, 0x4, 1, Buffer.from("ff", "hex"))])),
    ErrorCode.COMPRESSION_ERROR,
  );
});

test("a peer that never sends its preface is dropped after the settings timeout", async (t) => {
  const server = await h2Server(() => {}, { settingsTimeoutMs: 200 });
  t.teardown(() => server.close());
  const sock = net.connect(server.port, "127.0.0.1");
  sock.on("data", () => {});
  const closedAfter = await new Promise<number>((resolve) => {
    const started = Date.now();
    sock.once("close", () => resolve(Date.now() - started));
  });
  t.true(closedAfter >= 150 && closedAfter < 5000, `closed after ${closedAfter} ms`);
});
