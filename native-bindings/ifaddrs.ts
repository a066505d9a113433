/**
 * The interface addresses of the calling thread's current network namespace, through getifaddrs(3).
 *
 * getifaddrs rather than a netlink RTM_GETADDR dump of our own: glibc does that dump itself (on a netlink socket it
 * opens in the calling thread's namespace, which is what setns() changed), and hands back a linked list whose
 * addresses are plain struct sockaddr, which sockaddr.ts already decodes. A dump of our own would add a netlink
 * request, a receive loop and a parser of nlmsghdr/ifaddrmsg/rtattr here, where bindings are meant to be thin.
 */
import koffi, { type TypeObject } from "koffi";
import { AF_INET, AF_INET6, freeifaddrs, getifaddrs } from "./libc.js";
import { decodeSockaddr } from "./sockaddr.js";

export interface InterfaceAddress {
  /** Interface name (eth0, lo, ...). */
  interface: string;
  family: 4 | 6;
  /** Canonical text form (IPv6 compressed, lowercase). */
  address: string;
  /** Interface index of an IPv6 link-local address; absent otherwise. */
  scopeId?: number;
}

// struct ifaddrs (ifaddrs.h); only the fields read here are typed, the rest are pointers kept for the layout.
const IfAddrs = koffi.struct("ambit_ifaddrs", {
  ifa_next: "void *",
  ifa_name: "const char *",
  ifa_flags: "unsigned int",
  ifa_addr: "void *",
  ifa_netmask: "void *",
  ifa_ifu: "void *",
  ifa_data: "void *",
});

interface IfAddrsEntry {
  ifa_next: bigint | null;
  ifa_name: string | null;
  ifa_addr: bigint | null;
}

// Copies of sockaddr_in / sockaddr_in6. koffi.view would avoid the copy, but what backs each view it makes is never
// released (koffi 3.3.4: RSS grew ~40 MB per 20,000 listings here, without bound).
const SOCKADDR = {
  [AF_INET]: koffi.array("uint8_t", 16, "Typed"),
  [AF_INET6]: koffi.array("uint8_t", 28, "Typed"),
} as Record<number, TypeObject>;

/**
 * Every IPv4 and IPv6 address of every interface in the calling thread's current network namespace, at most `max`
 * of them (a pod with NET_ADMIN can add any number of addresses; what it adds past the bound is not read). Entries
 * of other families (AF_PACKET, one per interface) are skipped. The list libc allocates is always freed.
 */
export function interfaceAddresses(max = 4096): InterfaceAddress[] {
  const head = getifaddrs();
  if (head === null) return [];
  const out: InterfaceAddress[] = [];
  try {
    for (let p: bigint | null = head; p !== null && out.length < max; ) {
      const entry = koffi.decode(p, IfAddrs) as IfAddrsEntry;
      p = entry.ifa_next;
      if (entry.ifa_addr === null) continue;
      const family = koffi.decode(entry.ifa_addr, "uint16_t") as number;
      const type = SOCKADDR[family];
      if (type === undefined) continue;
      const bytes = Buffer.from(koffi.decode(entry.ifa_addr, type) as Uint8Array);
      const { address, family: ipFamily, scopeId } = decodeSockaddr(bytes);
      out.push({ interface: entry.ifa_name ?? "", family: ipFamily, address, ...(scopeId ? { scopeId } : {}) });
    }
  } finally {
    freeifaddrs(head);
  }
  return out;
}
