/**
 * Entry of a data-plane worker thread: one Reactor on this thread's libuv loop, serving a listening socket handed
 * over by the main thread (fds are process-wide) with a plaintext TCP relay. The worker owns that socket, or, when
 * it is `shared` by a worker pool, only watches it. Stopping closes (or stops watching) the listener, resets the
 * connections, closes the reactor's uv handle and epoll fd, and lets the thread's loop run empty so the thread
 * exits by itself.
 */
import { parentPort, workerData } from "node:worker_threads";
import { AmbitError } from "../errors.js";
import { Listener, listenerStats } from "./listener.js";
import { Reactor } from "./reactor.js";
import { WorkerCounters } from "./shared-counters.js";
import { relayStats, TcpRelay } from "./tcp-relay.js";
import type { WorkerData, WorkerReply, WorkerRequest, WorkerStats } from "./worker-protocol.js";

const port = parentPort;
if (!port) throw new AmbitError("worker_no_parent", "agent/dataplane/worker.js runs only as a worker thread");

const counters = new WorkerCounters((workerData as WorkerData).counters);
const reactor = new Reactor();
let listener: Listener | undefined;
let relay: TcpRelay | undefined;

function stats(): WorkerStats {
  return {
    live: relay?.live ?? 0,
    watched: reactor.size,
    relay: relayStats(counters),
    listener: listenerStats(counters),
    reactor: { ...reactor.stats },
  };
}

async function handle(request: WorkerRequest): Promise<WorkerReply> {
  switch (request.type) {
    case "serve": {
      if (listener) throw new AmbitError("worker_already_serving", "this worker already serves a listener");
      const { target, connectTimeoutMs } = request;
      const served = new TcpRelay(reactor, { target, connectTimeoutMs, counters });
      relay = served;
      listener = new Listener(reactor, request.listenFd, counters, (fd) => served.relay(fd), {
        shared: request.shared,
      });
      return { id: request.id, type: "serving" };
    }
    case "stats":
      return { id: request.id, type: "stats", stats: stats() };
    case "stop":
      listener?.close();
      relay?.closeAll();
      await reactor.close();
      return { id: request.id, type: "stopped" };
  }
}

port.on("message", (request: WorkerRequest) => {
  handle(request).then(
    (reply) => {
      port.postMessage(reply);
      if (reply.type === "stopped") port.close();
    },
    (err: unknown) => {
      const code = err instanceof AmbitError ? err.code : "worker_request_failed";
      port.postMessage({ id: request.id, type: "failed", code, message: String(err) } satisfies WorkerReply);
    },
  );
});
