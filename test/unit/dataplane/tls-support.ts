import { readdirSync, readFileSync } from "node:fs";
import koffi from "koffi";
import { TlsConnection, type TlsStep } from "../../../agent/dataplane/tls/connection.js";
import { TlsContext } from "../../../agent/dataplane/tls/context.js";
import { TlsError } from "../../../agent/dataplane/tls/errors.js";
import { liveTlsObjects } from "../../../agent/dataplane/tls/live-objects.js";
import { closeFd, socketpair } from "../../../native-bindings/io.js";
import { issue, newCa, sid, TD, type Workload } from "../identity/helpers.js";

/** getsockname(2), which io.ts lacks: the port a listener bound to port 0 got (test-only declaration). */
const getsocknameRaw = koffi.load("libc.so.6").func("int getsockname(int fd, void *addr, _Inout_ uint32_t *len)");

export function localPort(fd: number): number {
  const addr = Buffer.alloc(128);
  if (getsocknameRaw(fd, addr, [addr.length]) !== 0) throw new Error(`getsockname(${fd}) failed`);
  return addr.readUInt16BE(2);
}

/**
 * This thread's write(2) calls and bytes so far (/proc/thread-self/io: syscw counts every call, EAGAIN included;
 * wchar the bytes taken). Read around a synchronous stretch, it counts exactly the socket writes made in it.
 */
export function threadWrites(): { calls: number; bytes: number } {
  const text = readFileSync("/proc/thread-self/io", "latin1");
  return { calls: Number(/syscw: (\d+)/.exec(text)?.[1]), bytes: Number(/wchar: (\d+)/.exec(text)?.[1]) };
}

export function openFds(): string[] {
  return readdirSync("/proc/self/fd").sort();
}

export function liveObjects(): { contexts: number; connections: number } {
  return { ...liveTlsObjects };
}

export function contextOf(w: Workload, bundlePem = w.bundlePem): TlsContext {
  return TlsContext.create({ chainPem: w.chainPem, keyPem: w.keys.privateKeyPem, bundlePem, trustDomain: TD });
}

export interface Pair {
  server: TlsConnection;
  client: TlsConnection;
  serverFd: number;
  clientFd: number;
  /** Frees both connections, then closes both fds (the teardown order: SSL objects first, then the fds). */
  close(): void;
}

/** Two TLS ends over an AF_UNIX stream socketpair: non-blocking, so the kernel buffers between them. */
export function tlsPair(serverCtx: TlsContext, clientCtx: TlsContext): Pair {
  const [serverFd, clientFd] = socketpair();
  const server = new TlsConnection(serverCtx, serverFd, "server");
  const client = new TlsConnection(clientCtx, clientFd, "client");
  return {
    server,
    client,
    serverFd,
    clientFd,
    close() {
      server.free();
      client.free();
      closeFd(serverFd);
      closeFd(clientFd);
    },
  };
}

export type Outcome = { step: TlsStep } | { error: TlsError };

function step(conn: TlsConnection, last: Outcome): Outcome {
  if ("error" in last || last.step === "done") return last;
  try {
    return { step: conn.handshake() };
  } catch (err) {
    if (err instanceof TlsError) return { error: err };
    throw err;
  }
}

/**
 * Alternates both handshakes until each side is done or failed, or neither can move (both waiting to read with
 * nothing in flight). No event loop: the socketpair buffers in the kernel, so each call sees what the other wrote.
 */
export function handshakeBoth(pair: Pair): { server: Outcome; client: Outcome } {
  let server: Outcome = { step: "want_read" };
  let client: Outcome = { step: "want_read" };
  for (let i = 0; i < 50; i++) {
    client = step(pair.client, client);
    server = step(pair.server, server);
    const settled = (o: Outcome) => "error" in o || o.step === "done";
    if (settled(client) && settled(server)) break;
  }
  return { server, client };
}

/**
 * Sends `data` from `from` to `to`, alternating writes and reads in one thread: returns what arrived and how often
 * the writer had to wait for the socket (TLS_WANT_WRITE).
 */
export function transfer(
  from: TlsConnection,
  to: TlsConnection,
  data: Buffer,
  chunk = 65536,
): { received: Buffer; writeWaits: number } {
  const parts: Buffer[] = [];
  const buf = Buffer.alloc(65536);
  let sent = 0;
  let got = 0;
  let writeWaits = 0;
  for (let rounds = 0; got < data.length; rounds++) {
    if (rounds > 100_000) throw new Error(`transfer stalled at ${got}/${data.length}`);
    while (sent < data.length) {
      const n = from.write(data.subarray(sent), Math.min(chunk, data.length - sent));
      if (n < 0) {
        writeWaits++;
        break;
      }
      sent += n;
    }
    // Taken is not sent: ciphertext the socketpair had no room for waits in the connection for a flush.
    if (sent === data.length && from.flush() < 0) writeWaits++;
    for (;;) {
      const n = to.read(buf);
      if (n < 0) break;
      parts.push(Buffer.from(buf.subarray(0, n)));
      got += n;
    }
  }
  return { received: Buffer.concat(parts), writeWaits };
}

/** Drains `conn` until it has nothing more for now: the bytes read and the first non-count result. */
export function readAll(conn: TlsConnection): { data: Buffer; end: number } {
  const parts: Buffer[] = [];
  const buf = Buffer.alloc(16384);
  for (;;) {
    const n = conn.read(buf);
    if (n < 0) return { data: Buffer.concat(parts), end: n };
    parts.push(Buffer.from(buf.subarray(0, n)));
  }
}

/**
 * Calls `tick` every millisecond until it returns a value (not undefined), for a TLS end driven by polling while
 * Node's own event loop runs the other end. A test stand-in for the worker's epoll loop.
 */
export function pollUntil<T>(tick: () => T | undefined, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  return new Promise<T>((resolve, reject) => {
    const timer = setInterval(() => {
      try {
        const value = tick();
        if (value !== undefined) {
          clearInterval(timer);
          resolve(value);
        } else if (Date.now() > deadline) {
          clearInterval(timer);
          reject(new Error(`no result within ${timeoutMs} ms`));
        }
      } catch (err) {
        clearInterval(timer);
        reject(err);
      }
    }, 1);
  });
}

export interface Fixture {
  db: Workload;
  cart: Workload;
  /** Same SPIFFE ID as cart, from another CA. */
  foreign: Workload;
}

let fixture: Promise<Fixture> | undefined;
/** Three workloads made once per test file: db and cart from one CA, a "cart" from a foreign CA. */
export function workloads(): Promise<Fixture> {
  fixture ??= (async () => {
    const ca = await newCa();
    const [db, cart, foreign] = await Promise.all([
      issue(ca, sid("shop", "db")),
      issue(ca, sid("shop", "cart")),
      issue(await newCa(), sid("shop", "cart")),
    ]);
    return { db, cart, foreign };
  })();
  return fixture;
}
