/**
 * The closed sets of reasons the proxy reports: why a connection was refused before it was relayed
 * (ambit_connections_refused_total{reason}) and how an HBONE handshake ended (ambit_tls_handshakes_total{result}).
 * They are metric label values, so nothing a peer sends (an HBONE answer's `:status`, an error it provokes) may add
 * to them: ProxyObserver takes only these types, and the metrics map any other string to "other" (reasons cross
 * from the workers to the main thread as plain strings, where the compiler no longer watches).
 */
import { ProxyError } from "./errors.js";

/** What the TLS handshake or the peer check after it says about an HBONE peer (tls/errors.ts, hbone-peer.ts). */
const PEER_FAILURES = [
  "timeout",
  "tls_error",
  "no_certificate",
  "unknown_ca",
  "expired",
  "not_yet_valid",
  "bad_san",
  "wrong_trust_domain",
  "bad_usage",
  "invalid_certificate",
  "identity_mismatch",
  "bad_alpn",
] as const;

export const HANDSHAKE_RESULTS = ["ok", "no_identity", "source_limit", ...PEER_FAILURES, "other"] as const;
export type HandshakeResult = (typeof HANDSHAKE_RESULTS)[number];
export type HandshakeFailure = Exclude<HandshakeResult, "ok" | "no_identity" | "source_limit" | "other">;

/**
 * The HBONE answers told apart: 401 is ztunnel's and ambit's AuthorizationPolicy denial, 403 a destination that
 * does not serve that address or port, 503 an app that did not accept. Any other status is "hbone_status_other".
 */
const HBONE_STATUSES = ["401", "403", "503"] as const;

export const REFUSAL_REASONS = [
  // Either direction: the original destination (dataplane/original-destination.ts, own-destination.ts), the upstream.
  "no_original_dst",
  "loopback_destination",
  "agent_port",
  "upstream_refused",
  "upstream_error",
  // Outbound: routing (outbound-route.ts), the source's certificate, the HBONE pool and the destination's answer.
  "no_ready_endpoint",
  "no_identity",
  "hbone_connect_failed",
  ...PEER_FAILURES.map((f) => `hbone_${f}` as const),
  ...HBONE_STATUSES.map((s) => `hbone_status_${s}` as const),
  "hbone_status_other",
  "hbone_error",
  // Inbound: STRICT mTLS, and what a CONNECT asked for (inbound-hbone.ts).
  "plaintext_strict",
  "not_connect",
  "bad_authority",
  "wrong_destination",
  // Either direction: the connection limits (dataplane/connection-limits.ts).
  "pod_connection_limit",
  "agent_connection_limit",
  "other",
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

const REFUSALS: ReadonlySet<string> = new Set(REFUSAL_REASONS);
const HANDSHAKES: ReadonlySet<string> = new Set(HANDSHAKE_RESULTS);

export function refusalReason(value: string): RefusalReason {
  return REFUSALS.has(value) ? (value as RefusalReason) : "other";
}

export function handshakeResult(value: string): HandshakeResult {
  return HANDSHAKES.has(value) ? (value as HandshakeResult) : "other";
}

/** The refusal a non-200 HBONE answer is counted as; `status` is whatever the destination sent. */
export function hboneStatusReason(status: string | undefined): RefusalReason {
  return (HBONE_STATUSES as readonly (string | undefined)[]).includes(status)
    ? (`hbone_status_${status}` as RefusalReason)
    : "hbone_status_other";
}

/** The refusal a failed HbonePool.open() is counted as: the pool's own codes, "hbone_error" for anything else. */
export function hboneFailureReason(err: unknown): RefusalReason {
  if (!(err instanceof ProxyError)) return "hbone_error";
  const reason = refusalReason(err.code);
  return reason === "other" ? "hbone_error" : reason;
}
