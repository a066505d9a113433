import { isIPv4, isIPv6, SocketAddress } from "node:net";
import { AF_INET, AF_INET6 } from "./libc.js";

export interface Endpoint {
  address: string;
  port: number;
  family: 4 | 6;
  /** sin6_scope_id: the interface of an IPv6 link-local address (0 or absent otherwise). */
  scopeId?: number;
}

/** Family of a literal IP address; throws on anything else (no DNS in the data path). */
export function familyOf(address: string): 4 | 6 {
  if (isIPv4(address)) return 4;
  if (isIPv6(address)) return 6;
  throw new TypeError(`not an IP address: ${JSON.stringify(address)}`);
}

/** struct sockaddr_in / sockaddr_in6 in the layout Linux expects (family in host order, port in network order). */
export function encodeSockaddr(address: string, port: number): Buffer {
  const family = familyOf(address);
  if (family === 4) {
    const buf = Buffer.alloc(16);
    buf.writeUInt16LE(AF_INET, 0);
    buf.writeUInt16BE(port, 2);
    for (const [i, octet] of address.split(".").entries()) buf[4 + i] = Number(octet);
    return buf;
  }
  const buf = Buffer.alloc(28);
  buf.writeUInt16LE(AF_INET6, 0);
  buf.writeUInt16BE(port, 2);
  ipv6Bytes(address).copy(buf, 8);
  return buf;
}

export function decodeSockaddr(buf: Buffer): Endpoint {
  const family = buf.readUInt16LE(0);
  const port = buf.readUInt16BE(2);
  if (family === AF_INET) return { address: [...buf.subarray(4, 8)].join("."), port, family: 4 };
  if (family === AF_INET6) {
    const scopeId = buf.length >= 28 ? buf.readUInt32LE(24) : 0;
    return { address: ipv6Text(buf.subarray(8, 24)), port, family: 6, ...(scopeId ? { scopeId } : {}) };
  }
  throw new TypeError(`unknown address family ${family}`);
}

function ipv6Bytes(address: string): Buffer {
  const [head = "", tail] = address.split("::");
  const groups = (part: string) => (part ? part.split(":") : []);
  let words = groups(head);
  const rest = tail === undefined ? [] : groups(tail);
  // An embedded IPv4 tail (::ffff:1.2.3.4) is two words.
  const last = (tail === undefined ? words : rest).at(-1);
  if (last?.includes(".")) {
    const v4 = last.split(".").map(Number);
    const pair = [((v4[0] ?? 0) << 8) | (v4[1] ?? 0), ((v4[2] ?? 0) << 8) | (v4[3] ?? 0)].map((w) => w.toString(16));
    if (tail === undefined) words = [...words.slice(0, -1), ...pair];
    else rest.splice(rest.length - 1, 1, ...pair);
  }
  const zeros = tail === undefined ? [] : new Array(8 - words.length - rest.length).fill("0");
  const buf = Buffer.alloc(16);
  for (const [i, word] of [...words, ...zeros, ...rest].entries()) buf.writeUInt16BE(Number.parseInt(word, 16), i * 2);
  return buf;
}

function ipv6Text(bytes: Buffer): string {
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(bytes.readUInt16BE(i).toString(16));
  // SocketAddress normalises to the canonical compressed form.
  return new SocketAddress({ address: words.join(":"), family: "ipv6" }).address;
}
