import { isIP } from "node:net";

/** `:authority` of an HBONE CONNECT: the original destination, `ip:port` or `[ipv6]:port`. No host names. */
export function formatAuthority(ip: string, port: number): string {
  return isIP(ip) === 6 ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/**
 * The inverse of formatAuthority: brackets for IPv6 and only IPv6 (RFC 3986 IP-literal), and no zone (`%eth0` names
 * an interface of the receiving node; no pod's address has one, convert-common.ts refuses them). A bracketed IPv4
 * address used to be taken as the address, and a zone refused only later as another pod's destination (403).
 */
export function parseAuthority(authority: string | undefined): { ip: string; port: number } | undefined {
  if (!authority) return undefined;
  const bracketed = /^\[([^\]]+)\]:(\d{1,5})$/.exec(authority);
  const m = bracketed ?? /^([^:[\]]+):(\d{1,5})$/.exec(authority);
  if (!m?.[1] || !m[2]) return undefined;
  const port = Number(m[2]);
  if (isIP(m[1]) !== (bracketed ? 6 : 4) || m[1].includes("%") || port < 1 || port > 65535) return undefined;
  return { ip: m[1], port };
}

/**
 * RFC 7239 `Forwarded` naming the app's address at the source, as ztunnel sends it. The destination delivers from
 * the tunnel's outer address instead, which the source agent dials from the same pod: a header is whatever the peer
 * wrote, and an address that decides ipBlocks and what the app sees must not be. Empty when the address is unknown.
 */
export function formatForwarded(ip: string): string {
  const family = isIP(ip);
  if (family === 0) return "";
  return family === 6 ? `for="[${ip}]"` : `for=${ip}`;
}

/**
 * W3C baggage naming the source workload, for destinations that take their metric labels from it (Istio's proxies).
 * An ambit destination never reads it: its labels come from its workload index, its authorization from the peer
 * certificate.
 */
export function formatBaggage(fields: { namespace: string; workload: string; pod: string }): string {
  return [
    `k8s.namespace.name=${encodeURIComponent(fields.namespace)}`,
    `k8s.workload.name=${encodeURIComponent(fields.workload)}`,
    `k8s.pod.name=${encodeURIComponent(fields.pod)}`,
  ].join(",");
}
