import koffi from "koffi";
import { SyscallError } from "./errors.js";

/** koffi declarations for the few libc calls ambit needs; every wrapper turns -1 into a SyscallError. */
const libc = koffi.load("libc.so.6");

const raw = {
  open: libc.func("int open(const char *path, int flags)"),
  close: libc.func("int close(int fd)"),
  setns: libc.func("int setns(int fd, int nstype)"),
  _exit: libc.func("void _exit(int status)"),
  socket: libc.func("int socket(int domain, int type, int protocol)"),
  bind: libc.func("int bind(int fd, const void *addr, uint32_t len)"),
  listen: libc.func("int listen(int fd, int backlog)"),
  setsockopt: libc.func("int setsockopt(int fd, int level, int name, const void *value, uint32_t len)"),
  getsockopt: libc.func("int getsockopt(int fd, int level, int name, _Out_ void *value, _Inout_ uint32_t *len)"),
  getifaddrs: libc.func("int getifaddrs(_Out_ void **ifap)"),
  freeifaddrs: libc.func("void freeifaddrs(void *ifa)"),
};

export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const O_RDONLY = 0;
export const O_CLOEXEC = 0o2000000;
export const CLONE_NEWNET = 0x40000000;
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const SO_REUSEPORT = 15;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_MARK = 36;
/** Bind a socket to an interface by index (Linux >= 5.0); how a link-local destination gets its scope. */
export const SO_BINDTOIFINDEX = 62;
export const SO_KEEPALIVE = 9;
export const IPPROTO_TCP = 6;
export const TCP_KEEPIDLE = 4;
export const TCP_KEEPINTVL = 5;
export const TCP_KEEPCNT = 6;
export const TCP_USER_TIMEOUT = 18;
export const SOL_IP = 0;
export const SOL_IPV6 = 41;
export const IP_TRANSPARENT = 19;
export const IPV6_V6ONLY = 26;
export const IPV6_TRANSPARENT = 75;
/** Same value for IPv4 (SO_ORIGINAL_DST, linux/netfilter_ipv4.h) and IPv6 (IP6T_SO_ORIGINAL_DST). */
export const SO_ORIGINAL_DST = 80;

/** Read errno right after the failing call, before anything else can overwrite it. */
function check(call: string, result: number, detail?: string): number {
  if (result < 0) throw new SyscallError(call, koffi.errno(), detail);
  return result;
}

export function open(path: string, flags: number): number {
  return check("open", raw.open(path, flags), path);
}

export function close(fd: number): void {
  check("close", raw.close(fd));
}

/** Close an fd we own after a failure, or once done with it, without hiding the error that matters. */
export function closeFdQuietly(fd: number): void {
  try {
    close(fd);
  } catch {
    // The fd is gone either way; the first error is the one worth reporting.
  }
}

/**
 * Ends the whole process at once (_exit(2)): no exit handlers, no thread teardown. For a process that can trust
 * nothing it would run on the way out; process.exit() would first stop the data plane's worker threads, and Node
 * aborts on a thread whose loop still holds a uv handle it cannot close from there.
 */
export function exitProcessNow(status: number): never {
  raw._exit(status);
  throw new Error("unreachable: _exit returned");
}

export function setns(fd: number, nstype: number, detail?: string): void {
  check("setns", raw.setns(fd, nstype), detail);
}

export function socket(domain: number, type: number, protocol = 0): number {
  return check("socket", raw.socket(domain, type, protocol));
}

export function bind(fd: number, addr: Buffer, detail?: string): void {
  check("bind", raw.bind(fd, addr, addr.length), detail);
}

export function listen(fd: number, backlog: number): void {
  check("listen", raw.listen(fd, backlog));
}

export function setsockoptInt(fd: number, level: number, name: number, value: number, detail?: string): void {
  const buf = Buffer.alloc(4);
  buf.writeInt32LE(value);
  check("setsockopt", raw.setsockopt(fd, level, name, buf, 4), detail);
}

export function getsockoptInt(fd: number, level: number, name: number, detail?: string): number {
  const buf = Buffer.alloc(4);
  check("getsockopt", raw.getsockopt(fd, level, name, buf, [4]), detail);
  return buf.readInt32LE();
}

/** getsockopt into a buffer of `size` bytes; returns the bytes the kernel wrote. */
export function getsockoptBuffer(fd: number, level: number, name: number, size: number, detail?: string): Buffer {
  const buf = Buffer.alloc(size);
  const len = [size];
  check("getsockopt", raw.getsockopt(fd, level, name, buf, len), detail);
  return buf.subarray(0, len[0]);
}

/**
 * getifaddrs(3): the head of a libc-allocated `struct ifaddrs` list (null when there are no interfaces at all).
 * The caller must hand it to freeifaddrs exactly once.
 */
export function getifaddrs(): bigint | null {
  const head: Array<bigint | null> = [null];
  check("getifaddrs", raw.getifaddrs(head));
  return head[0] ?? null;
}

export function freeifaddrs(head: bigint): void {
  raw.freeifaddrs(head);
}
