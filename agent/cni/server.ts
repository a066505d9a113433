/**
 * The agent's end of ambit-cni: a unix socket (root only, 0600) on which each connection carries one request line
 * and gets one answer line (protocol.ts). ADD answers once the pod's rules and listeners are in place in the
 * sandbox's namespace, or once the pod is known to be outside the mesh; the kubelet starts none of the pod's
 * containers before that.
 *
 * A pod whose record the agent has not seen yet (its watch lags the kubelet's, which placed the pod) is waited for
 * up to `waitMs` (default 5 s; the plugin's own deadline is 6 s of its 10); then ADD fails with pod_unknown, which
 * the plugin reports as "try again later", and the kubelet retries the sandbox. Answering "not meshed" for a pod the
 * agent does not know would let a meshed pod start unprotected.
 */

import { chmodSync, lstatSync, mkdirSync, renameSync, unlinkSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { dirname } from "node:path";
import { AmbitError } from "../errors.js";
import type { ClusterState } from "../kube/cluster-state.js";
import { objectKey } from "../kube/records.js";
import type { Logger } from "../log.js";
import { type CniSandbox, decideSandbox, type SandboxEnrollment } from "./decide.js";
import { type CniAgentAnswer, type CniAgentRequest, MAX_LINE_BYTES, parseAgentRequest } from "./protocol.js";
import { type CniCommandLabel, type CniResultLabel, cniRequestLabels } from "./request-labels.js";

/** What the server needs of the node agent (agent/node/node-agent.ts). */
export interface CniAgent {
  readonly sourceState: ClusterState;
  onApply(listener: () => void): () => void;
  enrollSandbox(key: string, sandbox: CniSandbox, certificateWaitMs: number): Promise<SandboxEnrollment>;
  sandboxEnrolled(key: string, netns: string): boolean;
  removeSandbox(key: string, containerId: string): void;
}

/** Counts each answered request (AgentMetrics: ambit_cni_requests_total, ambit_cni_request_duration_seconds). */
export interface CniMetrics {
  cniRequest(command: CniCommandLabel, result: CniResultLabel, seconds: number): void;
}

export interface CniServerOptions {
  path: string;
  agent: CniAgent;
  logger: Logger;
  metrics?: CniMetrics;
  /** Longest an ADD waits for its pod's record; default 5000 ms. */
  waitMs?: number;
  /**
   * Longest an ADD waits for the pod's certificate once its rules are in place (default 3000 ms); past it the pod
   * starts with its meshed traffic refused until the CA answers (fails closed).
   */
  certificateWaitMs?: number;
  /** Longest a client may take to send its request line; default 5000 ms. */
  readTimeoutMs?: number;
  /** Connections served at once; more are closed at once. The kubelet starts a few sandboxes at a time. */
  maxConnections?: number;
}

export class CniServerError extends AmbitError {}

/** Sockets bound by this process so far: each binds under a name of its own (see listen). */
let bound = 0;

export class CniServer {
  readonly #o: CniServerOptions;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #waits = new Set<() => void>();

  private constructor(options: CniServerOptions) {
    this.#o = options;
    this.#server = createServer((socket) => this.#serve(socket));
    this.#server.maxConnections = options.maxConnections ?? 64;
  }

  /**
   * Listens on `path`, taking it over from the agent that had it (never another kind of file). The socket is bound
   * under a name of its own, made 0600, and then renamed onto `path`: the plugin finds a listening socket at every
   * instant, the previous agent's until the rename and this one's after, which is what an upgrade needs (two agents
   * on one node, the new one started first). Nothing ever unlinks `path`: Node unlinks the name a socket was bound
   * to when it closes, here the private name that the rename took away, so an old agent that stops after the
   * takeover cannot remove the new one's socket. A dead agent's socket stays behind and refuses connections, which
   * the plugin reads as "agent down".
   */
  static async listen(options: CniServerOptions): Promise<CniServer> {
    const server = new CniServer(options);
    const own = `${options.path}.${process.pid}.${++bound}`;
    try {
      mkdirSync(dirname(options.path), { recursive: true, mode: 0o700 });
      const there = lstatOrUndefined(options.path);
      if (there && !there.isSocket()) throw new Error("a file that is not a socket is in the way");
      if (lstatOrUndefined(own)?.isSocket()) unlinkSync(own);
      await new Promise<void>((resolve, reject) => {
        server.#server.once("error", reject);
        server.#server.listen(own, () => {
          server.#server.off("error", reject);
          resolve();
        });
      });
      chmodSync(own, 0o600);
      renameSync(own, options.path);
    } catch (err) {
      server.#server.close();
      throw new CniServerError("cni_socket", `cannot listen for the CNI plugin on ${options.path}`, { cause: err });
    }
    return server;
  }

  close(): Promise<void> {
    for (const wake of this.#waits) wake();
    for (const s of this.#sockets) s.destroy();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  #serve(socket: Socket): void {
    this.#sockets.add(socket);
    socket.on("close", () => this.#sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    socket.setTimeout(this.#o.readTimeoutMs ?? 5000, () => socket.destroy());
    socket.setEncoding("utf8");
    let text = "";
    const onData = (d: string) => {
      text += d;
      const nl = text.indexOf("\n");
      if (nl < 0 && text.length <= MAX_LINE_BYTES) return;
      socket.off("data", onData);
      socket.setTimeout(0);
      const request = nl < 0 ? { invalid: "request line too long" } : parseAgentRequest(text.slice(0, nl));
      const started = process.hrtime.bigint();
      void this.#answer(request).then((answer) => {
        const { command, result } = cniRequestLabels(request, answer);
        this.#o.metrics?.cniRequest(command, result, Number(process.hrtime.bigint() - started) / 1e9);
        if (!socket.destroyed) socket.end(`${JSON.stringify(answer)}\n`);
      });
    };
    socket.on("data", onData);
  }

  async #answer(request: CniAgentRequest | { invalid: string }): Promise<CniAgentAnswer> {
    if ("invalid" in request) {
      this.#o.logger.warn({ reason: request.invalid }, "CNI request refused: malformed; the plugin fails the call");
      return { error: { code: "bad_request", message: request.invalid } };
    }
    const key = objectKey(request);
    const log = this.#o.logger.child({ pod: key, container: request.containerId });
    const sandbox: CniSandbox = { containerId: request.containerId, netns: request.netns, ips: request.ips };
    if (request.command === "del") {
      this.#o.agent.removeSandbox(key, request.containerId);
      log.info("CNI DEL: sandbox forgotten; the pod is enrolled as its record alone says");
      return { result: "removed" };
    }
    const started = Date.now();
    const decision = await this.#decide(key, sandbox);
    if (decision.kind === "wait") {
      log.warn(
        { missing: decision.missing, waitedMs: Date.now() - started },
        "CNI request: the pod's record has not arrived from the cluster; refused, the kubelet retries the sandbox",
      );
      return { error: { code: "pod_unknown", message: `no record of the ${decision.missing} yet; try again` } };
    }
    if (decision.kind === "not_meshed") return { result: "not_meshed", reason: decision.reason };
    if (decision.kind === "refuse") return { error: { code: decision.code, message: decision.message } };
    if (request.command === "check") {
      if (this.#o.agent.sandboxEnrolled(key, request.netns)) return { result: "enrolled" };
      return { error: { code: "not_enrolled", message: "the pod is meshed and not enrolled in this sandbox" } };
    }
    const done = await this.#o.agent.enrollSandbox(key, sandbox, this.#o.certificateWaitMs ?? 3000);
    if (!done.ok) {
      log.error(
        { reason: done.reason },
        "CNI ADD: enrollment failed; the plugin fails the call and the kubelet retries",
      );
      return { error: { code: done.reason, message: `rules and listeners not in place (${done.reason})` } };
    }
    const ms = Date.now() - started;
    if (done.certified) log.info({ netns: request.netns, ips: request.ips, ms }, "CNI ADD: pod enrolled");
    else
      log.warn(
        { netns: request.netns, ms },
        "CNI ADD: rules in place, no certificate yet; meshed traffic refused until it comes",
      );
    return { result: "enrolled" };
  }

  /** Decides, waiting for the cluster source (bounded) while the pod's or its namespace's record is missing. */
  async #decide(key: string, sandbox: CniSandbox) {
    const deadline = Date.now() + (this.#o.waitMs ?? 5000);
    for (;;) {
      const decision = decideSandbox(this.#o.agent.sourceState, key, sandbox);
      const left = deadline - Date.now();
      if (decision.kind !== "wait" || left <= 0) return decision;
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          stop();
          this.#waits.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        const stop = this.#o.agent.onApply(wake);
        this.#waits.add(wake);
      });
      if (!this.#server.listening) return decideSandbox(this.#o.agent.sourceState, key, sandbox);
    }
  }
}

function lstatOrUndefined(path: string) {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}
