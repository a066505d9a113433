/**
 * What ambit-cni and the agent say to each other over the agent's unix socket: one JSON request, one JSON answer,
 * each a single line, then the connection closes. Pure, and it imports only node:net, which the plugin loads anyway:
 * the plugin loads this module on every pod start, so anything else would be paid for in every sandbox's ADD.
 */

import { isIP } from "node:net";

export type CniAgentCommand = "add" | "del" | "check";

export interface CniAgentRequest {
  command: CniAgentCommand;
  namespace: string;
  name: string;
  /** CNI_CONTAINERID: the sandbox; a DEL for an older sandbox of the same pod must not undo a newer one's ADD. */
  containerId: string;
  /** CNI_NETNS: the sandbox's network namespace path, as the runtime gave it. */
  netns: string;
  /** The sandbox's addresses from prevResult (the pod's record has none before the kubelet reports them). */
  ips: string[];
}

/**
 * `enrolled`: rules and listeners are in place in the namespace. `not_meshed`: the pod is outside the mesh, nothing
 * was done. `removed`: DEL done (also when there was nothing to remove).
 */
export type CniAgentAnswer =
  | { result: "enrolled" | "not_meshed" | "removed"; reason?: string }
  | { error: { code: string; message: string } };

/** A request or answer line longer than this is refused: both ends read hostile-length input otherwise. */
export const MAX_LINE_BYTES = 16 * 1024;
const MAX_FIELD = 253;
export const MAX_IPS = 8;

/** The request, or a reason it is not one. */
export function parseAgentRequest(line: string): CniAgentRequest | { invalid: string } {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return { invalid: "not JSON" };
  }
  if (typeof v !== "object" || v === null) return { invalid: "not an object" };
  const o = v as Record<string, unknown>;
  if (o.command !== "add" && o.command !== "del" && o.command !== "check") return { invalid: "unknown command" };
  for (const f of ["namespace", "name", "containerId", "netns"] as const) {
    const s = o[f];
    if (typeof s !== "string" || s.length > (f === "netns" ? 4096 : MAX_FIELD)) return { invalid: `bad ${f}` };
  }
  if (!o.namespace || !o.name || !o.containerId) return { invalid: "namespace, name and containerId are required" };
  const ips = o.ips;
  // The addresses go into nftables rules and routes: only addresses, never text that merely looks like one.
  if (!Array.isArray(ips) || ips.length > MAX_IPS || !ips.every((ip) => typeof ip === "string" && isIP(ip) !== 0)) {
    return { invalid: "bad ips" };
  }
  if (o.command !== "del" && !(o.netns as string).startsWith("/")) return { invalid: "netns must be an absolute path" };
  return {
    command: o.command,
    namespace: o.namespace as string,
    name: o.name as string,
    containerId: o.containerId as string,
    netns: o.netns as string,
    ips: ips as string[],
  };
}

/** The answer, or undefined when the line is not one (the plugin then fails the call). */
export function parseAgentAnswer(line: string): CniAgentAnswer | undefined {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof v !== "object" || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (o.result === "enrolled" || o.result === "not_meshed" || o.result === "removed") {
    return { result: o.result, ...(typeof o.reason === "string" ? { reason: o.reason } : {}) };
  }
  const e = o.error as Record<string, unknown> | undefined;
  if (e && typeof e.code === "string" && typeof e.message === "string") {
    return { error: { code: e.code, message: e.message } };
  }
  return undefined;
}
