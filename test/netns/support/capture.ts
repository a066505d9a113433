import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, readFileSync } from "node:fs";

/** tcpdump inside a namespace, writing every TCP packet on `iface` to a file until stopped. */
export async function startCapture(
  netnsName: string,
  iface: string,
  file: string,
): Promise<(lastMarker?: string) => Promise<Buffer>> {
  const child: ChildProcess = spawn(
    "ip",
    [
      "netns",
      "exec",
      netnsName,
      "tcpdump",
      "--immediate-mode",
      "-Z",
      "root",
      "-i",
      iface,
      "-U",
      "-s",
      "0",
      "-w",
      file,
      "tcp",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  await new Promise<void>((resolve, reject) => {
    child.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes("listening on")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`tcpdump exited (${code}): ${stderr}`)));
  });
  /**
   * Stop once `lastMarker` (bytes the test sent last) is in the file, so no packet is still in flight inside
   * tcpdump when it is interrupted; give up waiting after a few seconds and stop anyway.
   */
  return async (lastMarker?: string) => {
    for (let waited = 0; lastMarker && waited < 5000 && !fileIncludes(file, lastMarker); waited += 50) {
      await new Promise((r) => setTimeout(r, 50));
    }
    // Stopped twice (a caller's cleanup after a failure), or tcpdump died: nothing to wait for.
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, "exit");
      child.kill("SIGINT");
      await exited;
    }
    return existsSync(file) ? readFileSync(file) : Buffer.alloc(0);
  };
}

function fileIncludes(file: string, text: string): boolean {
  return existsSync(file) && readFileSync(file).includes(text);
}

/** The ALPN extension of a ClientHello offering exactly "h2": type 16, length 5, list length 3, "\x02h2". */
export const ALPN_H2_ONLY = Buffer.from([0x00, 0x10, 0x00, 0x05, 0x00, 0x03, 0x02, 0x68, 0x32]);

/** One TCP segment of a capture: its endpoints and payload (empty for a bare SYN, ACK, FIN or RST). */
export interface TcpSegment {
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  payload: Buffer;
}

const LINKTYPE_ETHERNET = 1;

/**
 * The TCP segments of a pcap file as tcpdump writes it on a veth (Ethernet frames, IPv4 or IPv6 without extension
 * headers), to count packets by port rather than search the file's bytes. Anything else in the file is skipped.
 */
export function tcpSegments(pcap: Buffer): TcpSegment[] {
  if (pcap.length < 24) return [];
  const magic = pcap.readUInt32LE(0);
  const little = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!little && pcap.readUInt32BE(0) !== 0xa1b2c3d4 && pcap.readUInt32BE(0) !== 0xa1b23c4d) {
    throw new Error("not a pcap file");
  }
  const u32 = (at: number) => (little ? pcap.readUInt32LE(at) : pcap.readUInt32BE(at));
  if (u32(20) !== LINKTYPE_ETHERNET) throw new Error(`pcap link type ${u32(20)}, not Ethernet`);
  const out: TcpSegment[] = [];
  for (let pos = 24; pos + 16 <= pcap.length; ) {
    const length = u32(pos + 8);
    const frame = pcap.subarray(pos + 16, pos + 16 + length);
    pos += 16 + length;
    const segment = ethernetTcp(frame);
    if (segment) out.push(segment);
  }
  return out;
}

function ethernetTcp(frame: Buffer): TcpSegment | undefined {
  if (frame.length < 14) return undefined;
  const type = frame.readUInt16BE(12);
  let ip = frame.subarray(14);
  let src: string;
  let dst: string;
  if (type === 0x0800 && ip.length >= 20 && ip[9] === 6) {
    src = ip.subarray(12, 16).join(".");
    dst = ip.subarray(16, 20).join(".");
    // Total length, not the frame's: a short segment is padded to Ethernet's minimum.
    ip = ip.subarray(((ip[0] as number) & 0x0f) * 4, ip.readUInt16BE(2));
  } else if (type === 0x86dd && ip.length >= 40 && ip[6] === 6) {
    src = ipv6Text(ip.subarray(8, 24));
    dst = ipv6Text(ip.subarray(24, 40));
    ip = ip.subarray(40, 40 + ip.readUInt16BE(4));
  } else return undefined;
  if (ip.length < 20) return undefined;
  return {
    src,
    dst,
    srcPort: ip.readUInt16BE(0),
    dstPort: ip.readUInt16BE(2),
    payload: ip.subarray(((ip[12] as number) >> 4) * 4),
  };
}

function ipv6Text(b: Buffer): string {
  return Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2).toString(16)).join(":");
}
