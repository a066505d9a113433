/**
 * ambit-cni: a chained CNI plugin (spec 1.0) that has the node's agent enroll a pod's sandbox before the kubelet
 * starts any of its containers. It runs as a separate process for every sandbox, so its import graph is kept to
 * Node's built-ins and pure modules: a bare `node -e 0` already costs p50 69-80 ms, p99 95-100 ms on the 2-core
 * test machine (200 runs), and every module added here is paid on each pod start. The TLS client for the API server
 * is imported only when the agent does not answer.
 *
 * Which pods may start when the agent does not answer: only those the API server says are outside the mesh (their
 * own labels and their namespace's, the agent's rule in kube/mesh-selection.ts). The plugin cannot know a new pod's
 * labels any other way, and a guess would let a meshed pod start unprotected; without API access configured, or
 * with the API server unreachable too, ADD fails with "try again later" and the kubelet retries the sandbox.
 */

import { read, readFileSync } from "node:fs";
import { connect } from "node:net";
import { isMeshEnrolled } from "../kube/mesh-selection.js";
import {
  CniError,
  errorResult,
  type Invocation,
  type KubeAccess,
  MAX_STDIN_BYTES,
  parseInvocation,
  prevResultIps,
  SUPPORTED_VERSIONS,
} from "./invocation.js";
import { type CniAgentAnswer, type CniAgentRequest, MAX_LINE_BYTES, parseAgentAnswer } from "./protocol.js";

type Call = Extract<Invocation, { pod?: unknown }>;

/** The agent's share of timeoutMs when the API server may have to be asked after it; the rest is for that. */
const AGENT_SHARE = 0.6;
const STDIN_TIMEOUT_MS = 5000;
/** A Pod object with many containers and annotations stays well below this. */
const MAX_API_BODY = 4 * 1024 * 1024;

async function main(): Promise<number> {
  let cniVersion = "1.0.0";
  try {
    const call = parseInvocation(process.env, await readStdin());
    if (call.command === "VERSION") {
      process.stdout.write(JSON.stringify({ cniVersion: call.cniVersion, supportedVersions: SUPPORTED_VERSIONS }));
      return 0;
    }
    cniVersion = call.config.cniVersion;
    await run(call);
    return 0;
  } catch (err) {
    const cni =
      err instanceof CniError
        ? err
        : new CniError("io_failure", "ambit-cni failed unexpectedly", String(err), { cause: err });
    process.stdout.write(errorResult(cniVersion, cni));
    return 1;
  }
}

async function run(call: Call): Promise<void> {
  const passThrough = () => {
    if (call.command === "ADD") process.stdout.write(JSON.stringify(call.config.prevResult));
  };
  // Not a Kubernetes pod (no K8S_POD_* in CNI_ARGS): nothing ambit meshes.
  if (!call.pod) return passThrough();
  const { config, pod } = call;
  const deadline = Date.now() + config.timeoutMs;
  const request: CniAgentRequest = {
    command: call.command === "ADD" ? "add" : call.command === "DEL" ? "del" : "check",
    namespace: pod.namespace,
    name: pod.name,
    containerId: call.containerId,
    netns: call.netns,
    ips: prevResultIps(config.prevResult),
  };
  const agentMs = config.kubernetes ? Math.floor(config.timeoutMs * AGENT_SHARE) : config.timeoutMs;
  let answer: CniAgentAnswer;
  try {
    answer = await askAgent(config.agentSocket, request, agentMs);
  } catch (err) {
    // The sandbox is going away: a DEL never fails for want of an agent, which cleans up when it returns.
    if (call.command === "DEL") return;
    const why = `the ambit agent did not answer at ${config.agentSocket} (${(err as Error).message})`;
    if (!config.kubernetes) {
      throw new CniError(
        "try_again_later",
        `${why}, and no kubernetes access is configured to tell whether ${key(pod)} is meshed`,
      );
    }
    const meshed = await meshedPerApi(config.kubernetes, pod, deadline).catch((apiErr: Error) => {
      throw new CniError(
        "try_again_later",
        `${why}, and the API server did not say whether ${key(pod)} is meshed`,
        apiErr.message,
      );
    });
    if (meshed) throw new CniError("try_again_later", `${why}; ${key(pod)} is meshed and may not start unenrolled`);
    return passThrough();
  }
  if ("error" in answer) {
    const code = answer.error.code === "pod_unknown" ? "try_again_later" : "enrollment_failed";
    throw new CniError(
      code,
      `the ambit agent could not enroll ${key(pod)}: ${answer.error.message}`,
      answer.error.code,
    );
  }
  passThrough();
}

function key(pod: { namespace: string; name: string }): string {
  return `${pod.namespace}/${pod.name}`;
}

function readStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(
      () => reject(new CniError("io_failure", "stdin was not closed within 5 s")),
      STDIN_TIMEOUT_MS,
    );
    const next = () =>
      read(0, Buffer.allocUnsafe(65536), 0, 65536, null, (err, n, buf) => {
        if (err) {
          clearTimeout(timer);
          return reject(new CniError("io_failure", "reading stdin failed", err.message, { cause: err }));
        }
        if (n === 0) {
          clearTimeout(timer);
          return resolve(Buffer.concat(chunks).toString("utf8"));
        }
        size += n;
        if (size > MAX_STDIN_BYTES) {
          clearTimeout(timer);
          return reject(new CniError("decode_failure", "the network configuration is over 1 MiB"));
        }
        chunks.push(buf.subarray(0, n));
        next();
      });
    next();
  });
}

function askAgent(path: string, request: CniAgentRequest, timeoutMs: number): Promise<CniAgentAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    let text = "";
    const fail = (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    const timer = setTimeout(() => fail(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    socket.setEncoding("utf8");
    socket.on("error", fail);
    socket.on("connect", () => socket.write(`${JSON.stringify(request)}\n`));
    socket.on("data", (d: string) => {
      text += d;
      if (text.length > MAX_LINE_BYTES) return fail(new Error("answer too long"));
      const nl = text.indexOf("\n");
      if (nl < 0) return;
      const answer = parseAgentAnswer(text.slice(0, nl));
      if (!answer) return fail(new Error("answer is not one"));
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    });
    socket.on("end", () => fail(new Error("closed without an answer")));
  });
}

async function meshedPerApi(
  api: KubeAccess,
  pod: { namespace: string; name: string },
  deadline: number,
): Promise<boolean> {
  const { request } = await import("node:https");
  const token = readFileSync(api.tokenFile, "utf8").trim();
  const ca = readFileSync(api.caFile, "utf8");
  const get = (path: string): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const ms = Math.max(100, deadline - Date.now());
      const req = request(`${api.server}${path}`, {
        ca,
        headers: { authorization: `Bearer ${token}`, accept: "application/json" },
        timeout: ms,
        agent: false,
      });
      req.on("timeout", () => req.destroy(new Error(`GET ${path}: no answer within ${ms} ms`)));
      req.on("error", reject);
      req.on("response", (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => {
          body += d;
          if (body.length > MAX_API_BODY) req.destroy(new Error(`GET ${path}: answer over 4 MiB`));
        });
        res.on("end", () => {
          if (res.statusCode !== 200) return reject(new Error(`GET ${path}: ${res.statusCode}`));
          try {
            resolve(JSON.parse(body) as Record<string, unknown>);
          } catch (err) {
            reject(new Error(`GET ${path}: not JSON`, { cause: err }));
          }
        });
      });
      req.end();
    });
  const ns = encodeURIComponent(pod.namespace);
  const [podObject, nsObject] = await Promise.all([
    get(`/api/v1/namespaces/${ns}/pods/${encodeURIComponent(pod.name)}`),
    get(`/api/v1/namespaces/${ns}`),
  ]);
  return isMeshEnrolled({ labels: labelsOf(podObject) }, { labels: labelsOf(nsObject) });
}

function labelsOf(o: Record<string, unknown>): Record<string, string> {
  const labels = (o.metadata as { labels?: unknown } | undefined)?.labels;
  const out: Record<string, string> = {};
  if (typeof labels === "object" && labels !== null) {
    for (const [k, v] of Object.entries(labels)) if (typeof v === "string") out[k] = v;
  }
  return out;
}

// No top-level await: the plugin ships as one CommonJS script (agent/cni/bundle.ts), which has none. main() never
// rejects.
void main().then((code) => {
  process.exitCode = code;
});
