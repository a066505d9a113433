/**
 * HBONE's transport on the loop, for tests: two TlsTransports over real loopback TCP (a Listener accepting on the
 * same Reactor, a non-blocking connect on the other end), and H2Sessions over them.
 */
import { createHash } from "node:crypto";
import { Listener } from "../../../../agent/dataplane/listener.js";
import type { Reactor } from "../../../../agent/dataplane/reactor.js";
import { WorkerCounters } from "../../../../agent/dataplane/shared-counters.js";
import type { TlsContext } from "../../../../agent/dataplane/tls/context.js";
import { TlsTransport } from "../../../../agent/dataplane/tls-transport.js";
import { H2Session } from "../../../../agent/h2/session.js";
import type { H2Stream } from "../../../../agent/h2/stream.js";
import { AF_INET, connect, EINPROGRESS, tcpSocket } from "../../../../native-bindings/io.js";
import { encodeSockaddr } from "../../../../native-bindings/sockaddr.js";
import { openListenerFd } from "../../../../native-bindings/sockets.js";
import { handlers } from "../../../support/h2-handlers.js";
import { localPort } from "../tls-support.js";

export { handlers };

/** The proxy's windows (agent/proxy/tuning.ts defaults), so flow control runs as it does in HBONE. */
export const SETTINGS = {
  streamWindow: 4 * 1024 * 1024,
  connectionWindow: 16 * 1024 * 1024,
  maxConcurrentStreams: 1000,
};

/** A non-blocking socket with its connect to 127.0.0.1:`port` started (the transport waits for it). */
export function dial(port: number): number {
  const fd = tcpSocket(AF_INET);
  if (fd < 0) throw new Error(`socket failed: ${-fd}`);
  const r = connect(fd, encodeSockaddr("127.0.0.1", port));
  if (r < 0 && r !== -EINPROGRESS) throw new Error(`connect failed: ${-r}`);
  return fd;
}

export interface HandshakeOutcome {
  client: PromiseSettledResult<TlsTransport>;
  server: PromiseSettledResult<TlsTransport>;
}

/** One TCP connection on loopback, both ends handshaken by TlsTransports on `reactor`; each outcome as settled. */
export async function handshakePair(
  reactor: Reactor,
  serverCtx: TlsContext,
  clientCtx: TlsContext,
  handshakeTimeoutMs = 5000,
): Promise<HandshakeOutcome> {
  const lfd = openListenerFd({ address: "127.0.0.1", port: 0 });
  let listener: Listener | undefined;
  const accepted = new Promise<number>((resolve) => {
    listener = new Listener(reactor, lfd, WorkerCounters.standalone(), resolve);
  });
  const client = TlsTransport.open({
    reactor,
    context: clientCtx,
    fd: dial(localPort(lfd)),
    role: "client",
    handshakeTimeoutMs,
  });
  const fd = await accepted;
  listener?.close();
  const server = TlsTransport.open({ reactor, context: serverCtx, fd, role: "server", handshakeTimeoutMs });
  const [c, s] = await Promise.allSettled([client, server]);
  return { client: c, server: s };
}

export interface SessionPair {
  client: H2Session;
  server: H2Session;
  clientT: TlsTransport;
  serverT: TlsTransport;
  /** Resolves with each session's "close" error (undefined for a clean close). */
  clientClosed: Promise<Error | undefined>;
  serverClosed: Promise<Error | undefined>;
}

export async function sessionPair(
  reactor: Reactor,
  serverCtx: TlsContext,
  clientCtx: TlsContext,
  onStream: (stream: H2Stream, headers: [string, string][]) => void,
): Promise<SessionPair> {
  const outcome = await handshakePair(reactor, serverCtx, clientCtx);
  if (outcome.client.status === "rejected" || outcome.server.status === "rejected") {
    for (const o of [outcome.client, outcome.server]) if (o.status === "fulfilled") o.value.destroy();
    throw new Error(`handshake failed: ${JSON.stringify(outcome)}`);
  }
  const clientT = outcome.client.value;
  const serverT = outcome.server.value;
  const server = new H2Session(serverT, { role: "server", settings: SETTINGS });
  server.on("stream", onStream);
  const client = new H2Session(clientT, { role: "client", settings: SETTINGS });
  return { client, server, clientT, serverT, clientClosed: closeOf(client), serverClosed: closeOf(server) };
}

export function closeOf(session: H2Session): Promise<Error | undefined> {
  return new Promise((resolve) => session.once("close", resolve));
}

export function connectRequest(session: H2Session, authority = "10.0.0.1:80"): H2Stream {
  return session.request([
    [":method", "CONNECT"],
    [":authority", authority],
  ]);
}

/**
 * Server side: answer 200 and send back every byte, end after the peer's end. What cannot be sent yet is not
 * consumed until the stream drains, so a slow reader closes the sender's window (HBONE's relay does the same with
 * bytes the app socket did not take: stream-relay.ts).
 */
export function echo(stream: H2Stream): void {
  let owed = 0;
  let blocked = false;
  stream.attach(
    handlers(stream, {
      // The chunk is a view of the transport's shared read buffer: copied, since the stream keeps it until sent.
      data: (chunk) => {
        const ok = stream.write(Buffer.from(chunk));
        if (blocked || !ok) {
          owed += chunk.length;
          blocked = true;
        } else stream.consumed(chunk.length);
      },
      drain: () => {
        blocked = false;
        stream.consumed(owed);
        owed = 0;
      },
      end: () => stream.end(),
    }),
  );
  stream.respond(200);
}

/**
 * Writes `mib` MiB (random bytes stamped with each MiB's index) honouring drain, then ends: the sha256 sent, and
 * the bytes handed to the stream so far.
 */
export function sendMiB(
  stream: H2Stream,
  mib: number,
  chunk: Buffer,
): { sha256: Promise<string>; drain: () => void; written: () => number } {
  const hash = createHash("sha256");
  let i = 0;
  let written = 0;
  let done: (h: string) => void = () => {};
  const sha256 = new Promise<string>((resolve) => {
    done = resolve;
  });
  const pump = () => {
    while (i < mib) {
      const stamped = Buffer.from(chunk);
      stamped.writeUInt32BE(i++, 0);
      hash.update(stamped);
      written += stamped.length;
      if (!stream.write(stamped)) return;
    }
    if (i === mib) {
      i++;
      stream.end();
      done(hash.digest("hex"));
    }
  };
  queueMicrotask(pump);
  return { sha256, drain: pump, written: () => written };
}

/** Hashes what a stream receives; `result` resolves at its end. */
export function hashReceived(stream: H2Stream): {
  data: (c: Buffer) => void;
  end: () => void;
  result: Promise<{ sha256: string; bytes: number }>;
} {
  const hash = createHash("sha256");
  let bytes = 0;
  let done: (r: { sha256: string; bytes: number }) => void = () => {};
  const result = new Promise<{ sha256: string; bytes: number }>((resolve) => {
    done = resolve;
  });
  return {
    data: (c) => {
      hash.update(c);
      bytes += c.length;
      stream.consumed(c.length);
    },
    end: () => done({ sha256: hash.digest("hex"), bytes }),
    result,
  };
}

/** A client stream: its status, what it received, how it ended. */
export interface Exchange {
  stream: H2Stream;
  status: Promise<string>;
  /** Everything received, once the peer ended its side. */
  body: Promise<Buffer>;
  /** How the stream ended: the reset code, or undefined when both sides ended. */
  closed: Promise<number | undefined>;
  received(): number;
}

/** Opens a stream with `headers` and records what comes back. */
export function exchange(session: H2Session, headers: [string, string][]): Exchange {
  const stream = session.request(headers);
  const chunks: Buffer[] = [];
  let bytes = 0;
  let resetCode: number | undefined;
  let setStatus: (s: string) => void = () => {};
  let setBody: (b: Buffer) => void = () => {};
  let setClosed: (c: number | undefined) => void = () => {};
  const status = new Promise<string>((resolve) => {
    setStatus = resolve;
  });
  const body = new Promise<Buffer>((resolve) => {
    setBody = resolve;
  });
  const closed = new Promise<number | undefined>((resolve) => {
    setClosed = resolve;
  });
  stream.attach(
    handlers(stream, {
      headers: (h) => setStatus(h.find(([n]) => n === ":status")?.[1] ?? ""),
      data: (c) => {
        // A view of the transport's shared read buffer: copied to be kept.
        chunks.push(Buffer.from(c));
        bytes += c.length;
        stream.consumed(c.length);
      },
      end: () => setBody(Buffer.concat(chunks)),
      reset: (code) => {
        resetCode = code;
        setStatus("reset");
      },
      close: () => setClosed(resetCode),
    }),
  );
  return { stream, status, body, closed, received: () => bytes };
}

export function connectTo(session: H2Session, authority: string, extra: [string, string][] = []): Exchange {
  return exchange(session, [[":method", "CONNECT"], [":authority", authority], ...extra]);
}
