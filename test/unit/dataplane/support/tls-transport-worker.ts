/**
 * A worker thread for tls-transport.test.ts: a Reactor of the worker's own loop, contexts built on this thread (the
 * ALPN callback is a koffi callback of this thread), a client and a server H2Session over TlsTransports on loopback:
 * one CONNECT stream echoing a message, then 8 MiB from client to server with sha256 compared. Posts what it saw,
 * with the thread's live OpenSSL counts during the test and after everything was released.
 */
import { randomBytes } from "node:crypto";
import { parentPort, workerData } from "node:worker_threads";
import { Reactor } from "../../../../agent/dataplane/reactor.js";
import { handlers } from "../../../support/h2-handlers.js";
import type { Workload } from "../../identity/helpers.js";
import { contextOf, liveObjects } from "../tls-support.js";
import { connectRequest, echo, hashReceived, sendMiB, sessionPair } from "./tls-sessions.js";

const { db, cart } = workerData as { db: Workload; cart: Workload };
const result: Record<string, unknown> = {};
const reactor = new Reactor();
const serverCtx = contextOf(db);
const clientCtx = contextOf(cart);
try {
  let upstream: Promise<{ sha256: string; bytes: number }> | undefined;
  const rig = await sessionPair(reactor, serverCtx, clientCtx, (stream, headers) => {
    if (headers.find(([n]) => n === ":authority")?.[1] === "echo:1") {
      echo(stream);
      return;
    }
    const hashed = hashReceived(stream);
    stream.attach(
      handlers(stream, {
        data: hashed.data,
        end: () => {
          hashed.end();
          stream.end();
        },
      }),
    );
    stream.respond(200);
    upstream = hashed.result;
  });

  const first = connectRequest(rig.client, "echo:1");
  result.echoed = await new Promise<string>((resolve) => {
    let text = "";
    first.attach(
      handlers(first, {
        headers: (h) => {
          result.status = h.find(([n]) => n === ":status")?.[1];
          first.write(Buffer.from("hello from a worker"));
          first.end();
        },
        data: (c) => {
          text += c.toString();
          first.consumed(c.length);
        },
        close: () => resolve(text),
      }),
    );
  });

  const bulk = connectRequest(rig.client, "bulk:1");
  const sender = sendMiB(bulk, 8, randomBytes(1024 * 1024));
  const closed = new Promise<void>((resolve) => bulk.attach(handlers(bulk, { drain: sender.drain, close: resolve })));
  const sent = await sender.sha256;
  await closed;
  const got = await upstream;
  result.bytes = got?.bytes;
  result.hashesEqual = got?.sha256 === sent;
  result.liveDuring = liveObjects();
  rig.client.close();
  result.closeErrors = (await Promise.all([rig.clientClosed, rig.serverClosed])).map((e) => e ?? null);
} catch (err) {
  result.error = String(err);
} finally {
  serverCtx.dispose();
  clientCtx.dispose();
  await reactor.close();
}
parentPort?.postMessage({ ...result, liveAfter: liveObjects() });
