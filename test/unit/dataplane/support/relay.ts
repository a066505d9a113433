import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import type { ExecutionContext } from "ava";
import { DataplaneWorker } from "../../../../agent/dataplane/worker-handle.js";
import type { WorkerStats } from "../../../../agent/dataplane/worker-protocol.js";
import { getsockname } from "../../../../native-bindings/io.js";
import { decodeSockaddr } from "../../../../native-bindings/sockaddr.js";
import { openListenerFd } from "../../../../native-bindings/sockets.js";
import { assertNoLeak, fdBaseline } from "../../../support/fd-leak.js";

export interface RelayRig {
  /** The relay's listening port (127.0.0.1). */
  port: number;
  worker: DataplaneWorker;
  stats(): Promise<WorkerStats>;
  connect(): Promise<net.Socket>;
  /** A client socket to the relay, not yet connected (for a test where the relay may reset it at once). */
  dial(): net.Socket;
}

export function listenerPort(fd: number): number {
  return decodeSockaddr(getsockname(fd)).port;
}

/** A loopback listener fd for the relay, and its port. */
export function relayListener(backlog?: number): { fd: number; port: number } {
  const fd = openListenerFd({ address: "127.0.0.1", port: 0, ...(backlog === undefined ? {} : { backlog }) });
  return { fd, port: listenerPort(fd) };
}

export async function listen(server: net.Server): Promise<number> {
  server.listen({ host: "127.0.0.1", port: 0 });
  await once(server, "listening");
  return (server.address() as net.AddressInfo).port;
}

/**
 * A relay in a worker thread in front of `target` (a port on 127.0.0.1), for `body`. Afterwards: every
 * connection of the test is gone (live count 0, the fds the test made closed) while the worker still runs, then
 * the worker stops with exit code 0 and the process has exactly its fds from before.
 */
export async function withRelay(
  t: ExecutionContext,
  targetPort: number,
  body: (rig: RelayRig) => Promise<void>,
  connectTimeoutMs = 5000,
): Promise<void> {
  const before = fdBaseline();
  const worker = new DataplaneWorker();
  const { fd, port } = relayListener();
  await worker.serve(fd, { address: "127.0.0.1", port: targetPort }, connectTimeoutMs);
  const serving = fdBaseline();
  const rig: RelayRig = {
    port,
    worker,
    stats: () => worker.stats(),
    dial: () => net.connect({ host: "127.0.0.1", port, allowHalfOpen: true }),
    async connect() {
      const socket = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true });
      await once(socket, "connect");
      return socket;
    },
  };
  try {
    await body(rig);
    await assertNoLeak(t, serving, async () => (await worker.stats()).live);
  } finally {
    t.is(await worker.stop(), 0, "worker exits cleanly");
  }
  await assertNoLeak(t, before);
}

/** A server on 127.0.0.1 calling `onConnection`; closed (with its connections destroyed) by the returned function. */
export async function backend(
  onConnection: (socket: net.Socket) => void,
): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    onConnection(socket);
  });
  const port = await listen(server);
  return {
    port,
    async close() {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, "close");
    },
  };
}

/** Everything `socket` sends until its EOF. */
export async function readAll(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on("data", (chunk: Buffer) => chunks.push(chunk));
  await once(socket, "end");
  return Buffer.concat(chunks);
}

/** sha256 of everything `socket` sends until its EOF, and the byte count. */
export async function hashAll(socket: net.Socket): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash("sha256");
  let bytes = 0;
  socket.on("data", (chunk: Buffer) => {
    hash.update(chunk);
    bytes += chunk.length;
  });
  await once(socket, "end");
  return { sha256: hash.digest("hex"), bytes };
}

/**
 * Writes `mib` MiB (1 MiB chunks of random bytes, each stamped with its index so a reordering shows) honouring
 * backpressure, then ends; returns the sha256 of what was sent.
 */
export async function sendMiB(socket: net.Socket, mib: number): Promise<string> {
  const hash = createHash("sha256");
  const chunk = randomBytes(1024 * 1024);
  for (let i = 0; i < mib; i++) {
    const stamped = Buffer.from(chunk);
    stamped.writeUInt32BE(i, 0);
    hash.update(stamped);
    if (!socket.write(stamped)) await once(socket, "drain");
  }
  socket.end();
  return hash.digest("hex");
}

/** The error a socket ends with (undefined when it closed without one). */
export async function closeError(socket: net.Socket): Promise<NodeJS.ErrnoException | undefined> {
  let error: NodeJS.ErrnoException | undefined;
  socket.on("error", (err) => {
    error = err;
  });
  socket.resume();
  // Not events.once: it would reject on the very error this waits for. A socket that got an EOF instead of a
  // reset stays half-open (allowHalfOpen) and never closes: report that rather than hang.
  const closed = await Promise.race([
    new Promise((resolve) => socket.once("close", () => resolve(true))),
    sleep(5000).then(() => false),
  ]);
  if (!closed) {
    socket.destroy();
    return Object.assign(new Error("no close within 5 s"), { code: "still_open" });
  }
  return error;
}
