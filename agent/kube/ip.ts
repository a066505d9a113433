import { isIP } from "node:net";

/** A comparable form of an IP address, or undefined if it is not one. */
export function canonicalIp(ip: string): string | undefined {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped?.[1] !== undefined) return mapped[1];
  const family = isIP(ip);
  if (family === 4) return ip;
  if (family !== 6) return undefined;
  // Expand to 8 full groups so "fd00::1" and "fd00:0:0::1" compare equal.
  const [head = "", tail] = ip.toLowerCase().split("::") as [string, string | undefined];
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const last = (tail !== undefined ? t : h).at(-1) ?? "";
  if (last.includes(".")) {
    // Embedded IPv4 tail (e.g. 64:ff9b::1.2.3.4): turn it into two hex groups.
    const o = last.split(".").map(Number) as [number, number, number, number];
    const groups = [((o[0] << 8) | o[1]).toString(16), ((o[2] << 8) | o[3]).toString(16)];
    (tail !== undefined ? t : h).splice(-1, 1, ...groups);
  }
  const fill = tail !== undefined ? Array(8 - h.length - t.length).fill("0") : [];
  return [...h, ...fill, ...t].map((g) => Number.parseInt(g, 16).toString(16)).join(":");
}
