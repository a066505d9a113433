/**
 * The RFC 9113 section 8 rules a receiver must enforce on a header list; a violation makes the message malformed
 * (a stream error). Returns what is wrong, or undefined.
 */
import type { HeaderList } from "./hpack.js";

const REQUEST_PSEUDO = new Set([":method", ":scheme", ":authority", ":path", ":protocol"]);
const RESPONSE_PSEUDO = new Set([":status"]);
const CONNECTION_SPECIFIC = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]);

export function checkHeaders(headers: HeaderList, kind: "request" | "response"): string | undefined {
  const allowed = kind === "request" ? REQUEST_PSEUDO : RESPONSE_PSEUDO;
  const pseudo = new Map<string, string>();
  let regularSeen = false;
  for (const [name, value] of headers) {
    if (name !== name.toLowerCase()) return `upper-case header name ${name}`;
    if (name.startsWith(":")) {
      if (regularSeen) return `pseudo-header ${name} after a regular header`;
      if (!allowed.has(name)) return `pseudo-header ${name} not allowed in a ${kind}`;
      if (pseudo.has(name)) return `duplicate ${name}`;
      pseudo.set(name, value);
      continue;
    }
    regularSeen = true;
    if (CONNECTION_SPECIFIC.has(name)) return `connection-specific header ${name}`;
    if (name === "te" && value !== "trailers") return "te other than trailers";
  }
  if (kind === "response") return pseudo.has(":status") ? undefined : "response without :status";
  const method = pseudo.get(":method");
  if (!method) return "request without :method";
  if (method === "CONNECT" && !pseudo.has(":protocol")) {
    if (!pseudo.get(":authority")) return "CONNECT without :authority";
    if (pseudo.has(":scheme") || pseudo.has(":path")) return "CONNECT with :scheme or :path";
    return undefined;
  }
  if (!pseudo.get(":scheme") || !pseudo.get(":path")) return "request without :scheme or :path";
  return undefined;
}

/** Header list to a record, for lookups; repeated names are joined with ", " as HTTP allows. */
export function headerRecord(headers: HeaderList): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of headers) out[name] = name in out ? `${out[name]}, ${value}` : value;
  return out;
}
