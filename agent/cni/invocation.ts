/**
 * One call of ambit-cni as the runtime makes it (CNI spec 1.0): the command and sandbox from the environment, the
 * network configuration from stdin. Pure, and it imports nothing heavy: it runs inside every pod's ADD.
 */

import { AmbitError } from "../errors.js";
import { MAX_IPS } from "./protocol.js";

/** What the plugin accepts in a configuration; CHECK exists since 0.4.0, and chaining needs prevResult. */
export const SUPPORTED_VERSIONS = ["0.4.0", "1.0.0"] as const;

/** The spec's well-known error codes (1-99) and ambit's own (100 up), by ambit's name for them. */
export const CNI_ERRORS = {
  incompatible_version: 1,
  invalid_environment: 4,
  io_failure: 5,
  decode_failure: 6,
  invalid_config: 7,
  /** The kubelet retries the sandbox: the agent is down or has not seen the pod yet. */
  try_again_later: 11,
  /** The agent tried and could not put the pod's rules and listeners in place. */
  enrollment_failed: 100,
} as const;

export type CniErrorCode = keyof typeof CNI_ERRORS;

export class CniError extends AmbitError {
  declare readonly code: CniErrorCode;
  readonly details: string;

  constructor(code: CniErrorCode, msg: string, details = "", options?: { cause?: unknown }) {
    super(code, msg, options);
    this.details = details;
  }
}

/** Where the plugin reads pod and namespace labels when the agent does not answer. */
export interface KubeAccess {
  server: string;
  tokenFile: string;
  caFile: string;
}

export interface PluginConfig {
  cniVersion: string;
  name: string;
  /** The agent's socket (default /var/run/ambit/cni.sock). */
  agentSocket: string;
  /** Longest the whole call may take, agent and API server included (default 10 s, at most 60 s). */
  timeoutMs: number;
  kubernetes?: KubeAccess;
  /** Absent on DEL by some runtimes and on a first plugin; required on ADD and CHECK (ambit-cni is chained). */
  prevResult?: Record<string, unknown>;
}

export type Invocation =
  | { command: "VERSION"; cniVersion: string }
  | {
      command: "ADD" | "DEL" | "CHECK";
      config: PluginConfig;
      containerId: string;
      netns: string;
      /** Absent when the runtime is not the kubelet (no K8S_POD_* in CNI_ARGS): not a pod, nothing to mesh. */
      pod?: { namespace: string; name: string };
    };

export const DEFAULT_SOCKET = "/var/run/ambit/cni.sock";
export const MAX_STDIN_BYTES = 1024 * 1024;

export function parseInvocation(env: Readonly<Record<string, string | undefined>>, stdin: string): Invocation {
  const command = env.CNI_COMMAND;
  if (command === "VERSION") {
    const version = tryJson(stdin);
    const v = isObject(version) && typeof version.cniVersion === "string" ? version.cniVersion : "1.0.0";
    return { command, cniVersion: v };
  }
  if (command !== "ADD" && command !== "DEL" && command !== "CHECK") {
    throw new CniError("invalid_environment", `CNI_COMMAND must be ADD, DEL, CHECK or VERSION`, `${command}`);
  }
  const need = (name: string): string => {
    const value = env[name];
    if (!value) throw new CniError("invalid_environment", `${name} is required for ${command}`);
    return value;
  };
  const containerId = need("CNI_CONTAINERID");
  need("CNI_IFNAME");
  // DEL may come after the namespace is gone (the spec lets CNI_NETNS be empty then).
  const netns = command === "DEL" ? (env.CNI_NETNS ?? "") : need("CNI_NETNS");
  const config = parseConfig(stdin, command);
  const args = parseCniArgs(env.CNI_ARGS ?? "");
  const namespace = args.get("K8S_POD_NAMESPACE");
  const name = args.get("K8S_POD_NAME");
  return { command, config, containerId, netns, ...(namespace && name ? { pod: { namespace, name } } : {}) };
}

/** "K=V;K=V" (the spec's CNI_ARGS); a malformed pair is an error, not skipped: it may have been the pod's name. */
export function parseCniArgs(text: string): Map<string, string> {
  const out = new Map<string, string>();
  if (text === "") return out;
  if (text.length > 4096) throw new CniError("invalid_environment", "CNI_ARGS is over 4096 characters");
  for (const pair of text.split(";")) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new CniError("invalid_environment", "CNI_ARGS is not K=V;K=V", pair);
    out.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return out;
}

function parseConfig(stdin: string, command: "ADD" | "DEL" | "CHECK"): PluginConfig {
  const raw = tryJson(stdin);
  if (!isObject(raw)) throw new CniError("decode_failure", "the network configuration on stdin is not JSON");
  const { cniVersion, name } = raw;
  if (typeof cniVersion !== "string" || typeof name !== "string") {
    throw new CniError("invalid_config", "cniVersion and name are required");
  }
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(cniVersion)) {
    throw new CniError(
      "incompatible_version",
      `cniVersion ${cniVersion} is not supported`,
      SUPPORTED_VERSIONS.join(","),
    );
  }
  const agentSocket = raw.agentSocket ?? DEFAULT_SOCKET;
  if (typeof agentSocket !== "string" || agentSocket === "") {
    throw new CniError("invalid_config", "agentSocket must be a path");
  }
  const timeoutMs = raw.timeoutMs ?? 10_000;
  if (typeof timeoutMs !== "number" || !Number.isInteger(timeoutMs) || timeoutMs < 100 || timeoutMs > 60_000) {
    throw new CniError("invalid_config", "timeoutMs must be whole milliseconds from 100 to 60000");
  }
  const prevResult = raw.prevResult;
  if (prevResult !== undefined && !isObject(prevResult)) {
    throw new CniError("invalid_config", "prevResult must be an object");
  }
  if (command !== "DEL" && prevResult === undefined) {
    throw new CniError("invalid_config", "ambit-cni is a chained plugin: prevResult is required");
  }
  return {
    cniVersion,
    name,
    agentSocket,
    timeoutMs,
    ...(raw.kubernetes === undefined ? {} : { kubernetes: kubeAccess(raw.kubernetes) }),
    ...(prevResult ? { prevResult } : {}),
  };
}

function kubeAccess(v: unknown): KubeAccess {
  if (isObject(v) && typeof v.server === "string" && typeof v.tokenFile === "string" && typeof v.caFile === "string") {
    if (!v.server.startsWith("https://")) throw new CniError("invalid_config", "kubernetes.server must be https");
    return { server: v.server, tokenFile: v.tokenFile, caFile: v.caFile };
  }
  throw new CniError("invalid_config", "kubernetes needs server, tokenFile and caFile");
}

/** The sandbox's addresses in prevResult (`ips[].address`, CIDR form), without their prefix length. */
export function prevResultIps(prevResult: Record<string, unknown> | undefined): string[] {
  const ips = prevResult?.ips;
  if (!Array.isArray(ips)) return [];
  const out: string[] = [];
  for (const entry of ips) {
    const address = isObject(entry) ? entry.address : undefined;
    if (typeof address === "string") out.push(address.split("/")[0] as string);
  }
  return out.slice(0, MAX_IPS);
}

/** A CNI error result, as the runtime reads it from stdout. */
export function errorResult(cniVersion: string, err: CniError): string {
  return JSON.stringify({ cniVersion, code: CNI_ERRORS[err.code], msg: err.message, details: err.details });
}

function tryJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
