/**
 * Entry of a data-plane worker thread: one Reactor on this thread's libuv loop. A worker either serves the mesh
 * (MeshWorker: the pods' listeners, HBONE both ways, passthrough) or, for benches and tests, one listening socket
 * relayed as plaintext TCP to a fixed target. Listening sockets are handed over by the main thread (fds are
 * process-wide) and stay the main thread's: a worker only watches them. Stopping closes the listeners, resets the
 * connections, closes the reactor's uv handle and epoll fd, and lets the thread's loop run empty so the thread
 * exits by itself.
 */
import { parentPort, workerData } from "node:worker_threads";
import { AmbitError } from "../errors.js";
import { endProcessWith } from "../pod-netns.js";
import { Listener, listenerStats } from "./listener.js";
import { MeshWorker } from "./mesh-worker.js";
import { Reactor } from "./reactor.js";
import { WorkerCounters } from "./shared-counters.js";
import { relayStats, TcpRelay } from "./tcp-relay.js";
import { liveTlsObjects } from "./tls/live-objects.js";
import type {
  WorkerData,
  WorkerEvents,
  WorkerFatal,
  WorkerReply,
  WorkerRequest,
  WorkerStats,
} from "./worker-protocol.js";

const port = parentPort;
if (!port) throw new AmbitError("worker_no_parent", "agent/dataplane/worker.js runs only as a worker thread");

const data = workerData as WorkerData;
// This thread stops running code and the main thread ends the process (pod-netns.ts); the fatal line goes first.
endProcessWith((status) => {
  mesh?.events.flush();
  port.postMessage({ type: "fatal", status } satisfies WorkerFatal);
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  throw new AmbitError("worker_not_ended", "the main thread did not end the process");
});
const counters = new WorkerCounters(data.counters);
const reactor = new Reactor();
let listener: Listener | undefined;
let relay: TcpRelay | undefined;
let mesh: MeshWorker | undefined;

function stats(): WorkerStats {
  return {
    live: (relay?.live ?? 0) + (mesh?.live ?? 0),
    watched: reactor.size,
    relay: relayStats(counters),
    listener: listenerStats(counters),
    reactor: { ...reactor.stats },
    pooledSessions: mesh?.pooledSessions ?? 0,
    tlsContexts: liveTlsObjects.contexts,
  };
}

function meshWorker(): MeshWorker {
  if (!mesh) throw new AmbitError("worker_not_mesh", "this worker was not told to serve the mesh");
  return mesh;
}

async function handle(request: WorkerRequest): Promise<WorkerReply> {
  const done: WorkerReply = { id: request.id, type: "done" };
  switch (request.type) {
    case "serve": {
      if (listener || mesh) throw new AmbitError("worker_already_serving", "this worker already serves");
      const { target, connectTimeoutMs } = request;
      const served = new TcpRelay(reactor, { target, connectTimeoutMs, counters });
      relay = served;
      listener = new Listener(reactor, request.listenFd, counters, (fd) => served.relay(fd), {
        shared: request.shared,
      });
      return { id: request.id, type: "serving" };
    }
    case "mesh":
      if (listener || mesh) throw new AmbitError("worker_already_serving", "this worker already serves");
      mesh = new MeshWorker(reactor, counters, request.settings, data, (events: WorkerEvents) =>
        port?.postMessage(events),
      );
      return done;
    case "state":
      meshWorker().applyState(request.changes);
      return done;
    case "identity":
      meshWorker().setIdentity(request.spiffe, request.material);
      return done;
    case "pod":
      meshWorker().addPod(
        request.key,
        request.pod,
        { fd: request.netnsFd, description: request.netnsDescription },
        request.limitSlot,
      );
      return done;
    case "listen":
      meshWorker().listen(request.key, request.kind, request.family, request.fd);
      return done;
    case "unlisten":
      meshWorker().unlisten(request.key, request.fd);
      return done;
    case "pod_gone":
      await meshWorker().removePod(request.key);
      return done;
    case "flush":
      mesh?.events.flush();
      return done;
    case "stats":
      return { id: request.id, type: "stats", stats: stats() };
    case "stop":
      listener?.close();
      relay?.closeAll();
      mesh?.close();
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
