import { canonicalIp } from "../kube/ip.js";
import { HBONE_PORT, INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT } from "../redirect/ports.js";

/** The in-pod listener ports: a connection the agent makes to one of them inside a pod would land on itself. */
export const AGENT_PORTS: ReadonlySet<number> = new Set([OUTBOUND_PORT, INBOUND_PLAINTEXT_PORT, HBONE_PORT]);

export type OwnDestination = "loopback_destination" | "agent_port";

/**
 * Why the proxy must not dial `dst` on a pod's behalf, or undefined when it may. A destination comes from the kernel
 * (SO_ORIGINAL_DST) or from a peer (an HBONE CONNECT's `:authority`). For a connection that was not redirected (an
 * app dialling 127.0.0.1:15001 itself, anyone dialling the pod's IP:15006), SO_ORIGINAL_DST returns the listener's
 * own address; dialling it from inside the pod goes over `lo`, past the rules, back to the same listener, and one
 * such connection used to nest until the agent ran out of descriptors (about 10,000 in two seconds).
 *
 * `local`: the address belongs to the pod itself (inbound destinations always do). Loopback is never dialled: the
 * rules never capture loopback, so a loopback original destination always means a connection nobody redirected.
 */
export function ownDestination(dst: { address: string; port: number }, local: boolean): OwnDestination | undefined {
  if (isLoopback(dst.address)) return "loopback_destination";
  if (local && AGENT_PORTS.has(dst.port)) return "agent_port";
  return undefined;
}

/** 127.0.0.0/8, ::1, and IPv4-mapped loopback. */
export function isLoopback(address: string): boolean {
  const ip = canonicalIp(address);
  if (ip === undefined) return false;
  return ip.startsWith("127.") || ip === "0:0:0:0:0:0:0:1";
}
