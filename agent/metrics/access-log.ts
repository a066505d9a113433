/**
 * One log line per finished connection (like Istio's access log) and per refused one: the first thing an operator
 * greps for when "pod A cannot reach pod B". Identities, not just IPs, because IPs are reused.
 */
import type { Logger } from "../log.js";
import type { ConnectionEnd, ConnectionInfo, ProxyObserver } from "../proxy/observer.js";
import { principalLabel } from "./labels.js";

/** The source side of a connection as every access-log line writes it. */
function sourceOf(info: ConnectionInfo) {
  return {
    workload: `${info.source.namespace}/${info.source.workload}`,
    principal: principalLabel(info.source.principal),
    ip: info.source.ip,
  };
}

export function accessLog(log: Logger): ProxyObserver {
  return {
    handshake: (role, result, seconds) => {
      if (result !== "ok") log.warn({ role, result, seconds }, "TLS handshake failed");
    },
    connectionOpened: () => {},
    connectionClosed: (info: ConnectionInfo, end: ConnectionEnd) => {
      log.info(
        {
          id: info.id,
          reporter: info.reporter,
          pod: info.pod,
          source: sourceOf(info),
          destination: {
            workload: `${info.destination.namespace}/${info.destination.workload}`,
            principal: principalLabel(info.destination.principal),
            address: `${info.destination.ip}:${info.destination.port}`,
          },
          tls: info.tls,
          sent: end.sent,
          received: end.received,
          durationMs: end.durationMs,
          ...(end.error ? { error: end.error } : {}),
        },
        "connection closed",
      );
    },
    connectionRefused: (pod, direction, reason) => {
      log.info({ pod, direction, reason }, "connection refused");
    },
    connectionDenied: (info, denial) => {
      log.info(
        {
          id: info.id,
          pod: info.pod,
          source: sourceOf(info),
          destination: { address: `${info.destination.ip}:${info.destination.port}` },
          tls: info.tls,
          policy: denial.policy,
          reason: denial.reason,
          ...(denial.rule !== undefined ? { rule: denial.rule } : {}),
        },
        "connection denied by AuthorizationPolicy; it never reached the app",
      );
    },
  };
}
