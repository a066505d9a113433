/**
 * Test-side traffic inside simulated pods, without child processes: servers and clients are real sockets opened
 * inside the pods' namespaces through the same bindings the agent uses (clients unmarked, so they are captured).
 */
import net from "node:net";
import { connectInNetns, LISTEN_BACKLOG, openListenerFdInNetns } from "../../../native-bindings/sockets.js";

/** A TCP server inside `netns` on ip:port; `onConnection` gets each accepted socket. */
export function serveIn(netns: string, ip: string, port: number, onConnection: (s: net.Socket) => void): net.Server {
  const open = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    open.add(s);
    s.once("close", () => open.delete(s));
    onConnection(s);
  });
  openSockets.set(server, open);
  server.listen({ fd: openListenerFdInNetns(netns, { address: ip, port }) }, LISTEN_BACKLOG);
  return server;
}

const openSockets = new WeakMap<net.Server, Set<net.Socket>>();

/** A server that answers every connection with `reply(socket)`, ignores what it is sent, and closes. */
export function answerIn(netns: string, ip: string, port: number, reply: (s: net.Socket) => string): net.Server {
  return serveIn(netns, ip, port, (s) => {
    s.on("error", () => {});
    s.resume();
    s.end(reply(s));
  });
}

/** An app connection from inside a pod (no mark: the pod's rules apply to it). */
export function dialFrom(netns: string, ip: string, port: number): Promise<net.Socket> {
  return connectInNetns(netns, { address: ip, port, mark: 0 });
}

/**
 * Connect, optionally send, and read until the peer closes. Rejects with the socket error (ECONNREFUSED...), or
 * with ETIMEDOUT when nothing happens for 15 s, so a connection that hangs fails the test where it hangs.
 */
export async function request(netns: string, ip: string, port: number, send?: string | Buffer): Promise<string> {
  const s = await dialFrom(netns, ip, port);
  s.setTimeout(15_000, () =>
    s.destroy(Object.assign(new Error(`no answer from ${ip}:${port} in 15 s`), { code: "ETIMEDOUT" })),
  );
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on("data", (c: Buffer) => chunks.push(c));
    s.on("error", reject);
    s.on("end", () => {
      s.end();
      resolve(Buffer.concat(chunks).toString());
    });
    if (send !== undefined) s.write(send);
    s.end();
  });
}

/** Stop the server and drop whatever connections it still has (a test ends without waiting for its peers). */
export function closeServer(server: net.Server): Promise<void> {
  for (const s of openSockets.get(server) ?? []) s.destroy();
  return new Promise((resolve) => server.close(() => resolve()));
}
