/**
 * What the proxy reports as it works. Metrics, logs and the admin server's connection table all implement this;
 * the proxy itself knows none of them.
 */
import type { HandshakeResult, RefusalReason } from "./reasons.js";

export interface Peer {
  workload: string;
  namespace: string;
  /** SPIFFE ID; empty when the peer is not authenticated (plaintext or passthrough). */
  principal: string;
  ip: string;
}

export interface ConnectionInfo {
  id: number;
  /** "source": the client-side agent (outbound); "destination": the server-side agent (inbound). */
  reporter: "source" | "destination";
  source: Peer;
  destination: Peer & { port: number };
  /** Mutual TLS (HBONE) protected this connection on the wire. */
  tls: boolean;
  /** The enrolled pod this agent served the connection for. */
  pod: string;
  startedAt: number;
}

export interface ConnectionEnd {
  /** Bytes from the source towards the destination, and back. */
  sent: number;
  received: number;
  durationMs: number;
  error?: string;
}

export type HandshakeRole = "client" | "server";

/** What decided an AuthorizationPolicy denial, as the metrics and the access log name it (agent/policy). */
export interface Denial {
  /** `namespace/name` of the deciding policy, or the reason when none decided ("allow_unmatched"). */
  policy: string;
  reason: string;
  /** Index of the matching rule in the policy's spec.rules, when a rule decided. */
  rule?: number;
}

export interface ProxyObserver {
  handshake(role: HandshakeRole, result: HandshakeResult, seconds: number): void;
  connectionOpened(info: ConnectionInfo): void;
  connectionClosed(info: ConnectionInfo, end: ConnectionEnd): void;
  /** A connection refused before it was relayed (policy, no identity, upstream down...). */
  connectionRefused(pod: string, direction: "outbound" | "inbound", reason: RefusalReason): void;
  /** An inbound connection an AuthorizationPolicy denied: it never reached the app. */
  connectionDenied(info: ConnectionInfo, denial: Denial): void;
}

/** What a relay carried when it ended. */
export interface RelayResult {
  /** Bytes from the relay's first side delivered to its second, and back. */
  aToB: number;
  bToA: number;
  /** The first error either side reported, if the relay ended by error rather than by both sides closing. */
  error?: Error;
}

/** The relay's completion callback that reports `info`'s end to `observer`, the relay's first side the source. */
export function reportClose(observer: ProxyObserver, info: ConnectionInfo) {
  return (r: RelayResult) =>
    observer.connectionClosed(info, {
      sent: r.aToB,
      received: r.bToA,
      durationMs: Date.now() - info.startedAt,
      ...(r.error ? { error: r.error.message } : {}),
    });
}

/** Fan one event out to several observers. */
export function observers(...list: ProxyObserver[]): ProxyObserver {
  return {
    handshake: (...a) => {
      for (const o of list) o.handshake(...a);
    },
    connectionOpened: (...a) => {
      for (const o of list) o.connectionOpened(...a);
    },
    connectionClosed: (...a) => {
      for (const o of list) o.connectionClosed(...a);
    },
    connectionRefused: (...a) => {
      for (const o of list) o.connectionRefused(...a);
    },
    connectionDenied: (...a) => {
      for (const o of list) o.connectionDenied(...a);
    },
  };
}

export const nullObserver: ProxyObserver = {
  handshake: () => {},
  connectionOpened: () => {},
  connectionClosed: () => {},
  connectionRefused: () => {},
  connectionDenied: () => {},
};
