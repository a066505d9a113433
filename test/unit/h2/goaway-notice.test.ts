/**
 * The two-phase GOAWAY of a server's graceful shutdown (H2Session.closeSoon, then close(); RFC 9113 section 6.8),
 * which HboneServer.close() runs when a pod leaves or the agent drains: the notice carries the highest stream id,
 * so a stream the client opened before it read the notice (or right after) is still served; only the final GOAWAY,
 * with the real last stream id, makes the server refuse new streams.
 */
import net from "node:net";
import test, { type ExecutionContext } from "ava";
import { ErrorCode, Flag, FrameType, MAX_WINDOW } from "../../../agent/h2/constants.js";
import { encodeHeaders, type HeaderList } from "../../../agent/h2/hpack.js";
import { within } from "../../support/within.js";
import { collect, echo, frame, h2Client, h2Server, preface } from "./support.js";

interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

const CONNECT: HeaderList = [
  [":method", "CONNECT"],
  [":authority", "10.0.0.1:80"],
];

/** A client that writes raw frames and keeps every frame the server sent, so a test controls what crosses when. */
class RawClient {
  readonly frames: Frame[] = [];
  readonly #sock: net.Socket;
  #buffered = Buffer.alloc(0);
  #closed = false;
  #wake: (() => void) | undefined;

  private constructor(sock: net.Socket) {
    this.#sock = sock;
    sock.on("data", (chunk: Buffer) => {
      this.#buffered = Buffer.concat([this.#buffered, chunk]);
      while (this.#buffered.length >= 9) {
        const length = this.#buffered.readUIntBE(0, 3);
        if (this.#buffered.length < 9 + length) break;
        const f: Frame = {
          type: this.#buffered[3] as number,
          flags: this.#buffered[4] as number,
          streamId: this.#buffered.readUInt32BE(5) & 0x7fffffff,
          payload: Buffer.from(this.#buffered.subarray(9, 9 + length)),
        };
        this.#buffered = this.#buffered.subarray(9 + length);
        this.frames.push(f);
        // The server's SETTINGS are acknowledged, as any client does.
        if (f.type === FrameType.SETTINGS && !(f.flags & Flag.ACK)) this.send(frame(FrameType.SETTINGS, Flag.ACK, 0));
      }
      this.#wake?.();
    });
    sock.on("error", () => {});
    sock.on("close", () => {
      this.#closed = true;
      this.#wake?.();
    });
  }

  static async connect(t: ExecutionContext, port: number): Promise<RawClient> {
    const sock = net.connect(port, "127.0.0.1");
    t.teardown(() => sock.destroy());
    await new Promise<void>((resolve, reject) => sock.once("connect", resolve).once("error", reject));
    const client = new RawClient(sock);
    client.send(preface, frame(FrameType.SETTINGS, 0, 0));
    return client;
  }

  get closed(): boolean {
    return this.#closed;
  }

  send(...bytes: Buffer[]): void {
    this.#sock.write(Buffer.concat(bytes));
  }

  /** The first frame from index `from` on that matches, waiting for it at most 3 s. */
  async next(what: string, match: (f: Frame) => boolean, from = 0): Promise<Frame> {
    const deadline = Date.now() + 3000;
    for (;;) {
      const found = this.frames.slice(from).find(match);
      if (found) return found;
      if (this.#closed) throw new Error(`${what}: the connection closed first`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${what}: not within 3000 ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Bytes the server sent on `streamId` in DATA frames, and whether one of them ended the stream. */
  data(streamId: number): { text: string; ended: boolean } {
    const mine = this.frames.filter((f) => f.streamId === streamId && f.type === FrameType.DATA);
    return {
      text: Buffer.concat(mine.map((f) => f.payload)).toString(),
      ended: this.frames.some(
        (f) =>
          f.streamId === streamId &&
          (f.type === FrameType.DATA || f.type === FrameType.HEADERS) &&
          f.flags & Flag.END_STREAM,
      ),
    };
  }

  async waitClosed(): Promise<void> {
    const deadline = Date.now() + 3000;
    while (!this.#closed) {
      if (Date.now() > deadline) throw new Error("the server did not close the connection within 3000 ms");
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

const headers = (id: number, endStream = false) =>
  frame(FrameType.HEADERS, Flag.END_HEADERS | (endStream ? Flag.END_STREAM : 0), id, encodeHeaders(CONNECT));
const data = (id: number, text: string, endStream = false) =>
  frame(FrameType.DATA, endStream ? Flag.END_STREAM : 0, id, Buffer.from(text));
const goaway = (f: Frame) => ({ last: f.payload.readUInt32BE(0) & 0x7fffffff, code: f.payload.readUInt32BE(4) });

test("closeSoon() then close(): a stream opened after the notice is served to its end; only the final GOAWAY refuses new ones", async (t) => {
  const server = await h2Server((stream) => echo(stream));
  t.teardown(() => server.close());
  const client = await RawClient.connect(t, server.port);

  // Stream 1 stays open across both GOAWAYs: it keeps the session up after the final one.
  client.send(headers(1), data(1, "one"));
  await client.next("stream 1's echo", (f) => f.streamId === 1 && f.type === FrameType.DATA);
  const session = server.sessions[0];
  if (!session) throw new Error("no server session");

  session.closeSoon();
  const noticeAt = client.frames.length;
  const notice = await client.next("the GOAWAY notice", (f) => f.type === FrameType.GOAWAY);
  t.deepEqual(goaway(notice), { last: MAX_WINDOW, code: ErrorCode.NO_ERROR }, "the notice names the highest id");

  // Opened after the client read the notice, as one that crossed it on the wire would be: served to its end.
  client.send(headers(3), data(3, "after the notice", true));
  await client.next(
    "stream 3 ended",
    (f) =>
      f.streamId === 3 &&
      (f.type === FrameType.RST_STREAM || (f.type === FrameType.DATA && !!(f.flags & Flag.END_STREAM))),
    noticeAt,
  );
  t.false(
    client.frames.some((f) => f.streamId === 3 && f.type === FrameType.RST_STREAM),
    "stream 3 was not refused",
  );
  t.deepEqual(client.data(3), { text: "after the notice", ended: true }, "stream 3 was echoed to its end");

  session.close();
  const final = await client.next("the final GOAWAY", (f) => f.type === FrameType.GOAWAY && f !== notice);
  t.deepEqual(goaway(final), { last: 3, code: ErrorCode.NO_ERROR }, "the final GOAWAY names the last stream served");

  // After the final GOAWAY a new stream is refused, and the one still open goes on.
  const finalAt = client.frames.length;
  client.send(headers(5, true));
  const refused = await client.next("stream 5's answer", (f) => f.streamId === 5, finalAt);
  t.deepEqual(
    { type: refused.type, code: refused.payload.readUInt32BE(0) },
    { type: FrameType.RST_STREAM, code: ErrorCode.REFUSED_STREAM },
    "stream 5 refused after the final GOAWAY",
  );
  client.send(data(1, " and more", true));
  await client.waitClosed();
  t.deepEqual(client.data(1), { text: "one and more", ended: true }, "stream 1 finished; then the session closed");
  t.is(client.frames.filter((f) => f.type === FrameType.GOAWAY).length, 2);
});

test("a request that crosses the GOAWAY notice on the wire is served, and the client opens no stream after it", async (t) => {
  const server = await h2Server((stream) => echo(stream));
  t.teardown(() => server.close());
  const client = await h2Client(server.port);
  t.teardown(() => client.destroy());
  // A first round trip: the server's session exists and both sides have exchanged SETTINGS.
  const first = client.request(CONNECT);
  const firstBody = collect(first);
  first.end();
  await within(firstBody, 3000, "the first stream");
  const session = server.sessions[0];
  if (!session) throw new Error("no server session");
  let goaways = 0;
  client.on("goaway", () => goaways++);

  // In the same turn: the notice and the client's HEADERS are both in flight, neither side has read the other's.
  session.closeSoon();
  const crossing = client.request(CONNECT);
  const body = collect(crossing);
  crossing.write(Buffer.from("crossed"));
  crossing.end();
  t.is((await within(body, 3000, "the crossing stream")).toString(), "crossed");
  t.is(goaways, 1, "the client read the notice");
  t.false(client.canRequest, "after the notice the client opens no new stream on this session");

  session.close();
  await within(
    new Promise((resolve) => client.once("close", resolve)),
    3000,
    "the client session's close after the final GOAWAY",
  );
  t.true(session.destroyed || session.streamCount === 0);
});
