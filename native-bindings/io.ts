import koffi from "koffi";
import { SyscallError } from "./errors.js";
import { AF_INET, AF_INET6, IPPROTO_TCP, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_STREAM, SOL_SOCKET } from "./libc.js";

export { AF_INET, AF_INET6, IPPROTO_TCP, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_STREAM, SOL_SOCKET };

/**
 * libc calls for ambit's own event loop (data path v2). The hot-path wrappers do not throw: they return the
 * result, or minus errno, because EAGAIN is the common case of a non-blocking read and an exception per call would
 * cost more than the call (a koffi call is well under a microsecond). Set-up calls throw a SyscallError.
 */
const libc = koffi.load("libc.so.6");

const raw = {
  epoll_create1: libc.func("int epoll_create1(int flags)"),
  epoll_ctl: libc.func("int epoll_ctl(int epfd, int op, int fd, void *event)"),
  epoll_wait: libc.func("int epoll_wait(int epfd, void *events, int maxevents, int timeout)"),
  accept4: libc.func("int accept4(int fd, void *addr, _Inout_ uint32_t *len, int flags)"),
  connect: libc.func("int connect(int fd, const void *addr, uint32_t len)"),
  bind: libc.func("int bind(int fd, const void *addr, uint32_t len)"),
  read: libc.func("intptr_t read(int fd, void *buf, uintptr_t count)"),
  write: libc.func("intptr_t write(int fd, const void *buf, uintptr_t count)"),
  shutdown: libc.func("int shutdown(int fd, int how)"),
  eventfd: libc.func("int eventfd(unsigned int initval, int flags)"),
  socketpair: libc.func("int socketpair(int domain, int type, int protocol, void *sv)"),
  close: libc.func("int close(int fd)"),
  fcntl: libc.func("int fcntl(int fd, int cmd, int arg)"),
  socket: libc.func("int socket(int domain, int type, int protocol)"),
  setsockopt: libc.func("int setsockopt(int fd, int level, int name, const void *value, uint32_t len)"),
  getsockopt: libc.func("int getsockopt(int fd, int level, int name, _Out_ void *value, _Inout_ uint32_t *len)"),
  getsockname: libc.func("int getsockname(int fd, _Out_ void *addr, _Inout_ uint32_t *len)"),
  getpeername: libc.func("int getpeername(int fd, _Out_ void *addr, _Inout_ uint32_t *len)"),
  getrlimit: libc.func("int getrlimit(int resource, _Out_ void *rlim)"),
  setrlimit: libc.func("int setrlimit(int resource, const void *rlim)"),
};

export const EPOLL_CLOEXEC = 0o2000000;
export const EPOLL_CTL_ADD = 1;
export const EPOLL_CTL_DEL = 2;
export const EPOLL_CTL_MOD = 3;
export const EPOLLIN = 0x001;
export const EPOLLOUT = 0x004;
export const EPOLLERR = 0x008;
export const EPOLLHUP = 0x010;
export const EPOLLRDHUP = 0x2000;
export const EPOLLEXCLUSIVE = 1 << 28;
export const EPOLLET = 1 << 31;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const AF_UNIX = 1;
export const SHUT_WR = 1;
export const SO_ERROR = 4;
export const SO_LINGER = 13;
export const TCP_NODELAY = 1;
export const RLIMIT_NOFILE = 7;

export const EAGAIN = 11;
export const EINTR = 4;
export const EINPROGRESS = 115;
export const EMFILE = 24;
export const ENFILE = 23;
export const ENOBUFS = 105;
export const ENOMEM = 12;
export const ECONNABORTED = 103;
export const EADDRINUSE = 98;
export const EADDRNOTAVAIL = 99;

/**
 * `struct epoll_event` is `{ uint32_t events; uint64_t data; }`, packed on x86-64 (12 bytes) and naturally aligned
 * elsewhere (16 bytes, data at offset 8). Only the low 32 bits of `data` are used: a token chosen by the loop.
 */
export const EPOLL_EVENT_SIZE = process.arch === "x64" ? 12 : 16;
const DATA_OFFSET = process.arch === "x64" ? 4 : 8;

/** A buffer for `max` events, read with eventMask/eventToken. */
export function epollEvents(max: number): Buffer {
  return Buffer.alloc(max * EPOLL_EVENT_SIZE);
}

export function eventMask(events: Buffer, i: number): number {
  return events.readUInt32LE(i * EPOLL_EVENT_SIZE);
}

export function eventToken(events: Buffer, i: number): number {
  return events.readUInt32LE(i * EPOLL_EVENT_SIZE + DATA_OFFSET);
}

function check(call: string, result: number, detail?: string): number {
  if (result < 0) throw new SyscallError(call, koffi.errno(), detail);
  return result;
}

/** The result, or minus errno: for calls whose failures are part of normal flow (EAGAIN, EINPROGRESS). */
function orErrno(result: number): number {
  return result < 0 ? -koffi.errno() : result;
}

export function epollCreate(): number {
  return check("epoll_create1", raw.epoll_create1(EPOLL_CLOEXEC));
}

const ctlEvent = Buffer.alloc(16);

/** Adds, modifies or removes `fd` in `epfd`; `token` comes back with its events. */
export function epollCtl(epfd: number, op: number, fd: number, mask: number, token: number): number {
  ctlEvent.writeUInt32LE(mask >>> 0, 0);
  ctlEvent.writeUInt32LE(token >>> 0, DATA_OFFSET);
  ctlEvent.writeUInt32LE(0, DATA_OFFSET + 4);
  return orErrno(raw.epoll_ctl(epfd, op, fd, ctlEvent));
}

/** Ready events into `events` (from epollEvents); `timeoutMs` 0 never blocks. Returns the count or minus errno. */
export function epollWait(epfd: number, events: Buffer, timeoutMs: number): number {
  return orErrno(raw.epoll_wait(epfd, events, events.length / EPOLL_EVENT_SIZE, timeoutMs));
}

const acceptLen = [0];

/** accept4 with SOCK_NONBLOCK|SOCK_CLOEXEC; the peer's sockaddr into `addr` when given. Returns the fd or -errno. */
export function accept(fd: number, addr: Buffer | null): number {
  acceptLen[0] = addr ? addr.length : 0;
  return orErrno(raw.accept4(fd, addr, acceptLen, SOCK_NONBLOCK | SOCK_CLOEXEC));
}

/** Starts a connect; a non-blocking socket returns -EINPROGRESS and reports the outcome as writable + SO_ERROR. */
export function connect(fd: number, addr: Buffer): number {
  return orErrno(raw.connect(fd, addr, addr.length));
}

/** bind(2) for the loop: 0 or -errno (EADDRINUSE is the caller's to retry with another port). */
export function bindTo(fd: number, addr: Buffer): number {
  return orErrno(raw.bind(fd, addr, addr.length));
}

/** Reads up to `length` bytes into `buf` (from its start); 0 is end of stream. Returns the count or -errno. */
export function read(fd: number, buf: Buffer, length: number): number {
  return orErrno(Number(raw.read(fd, buf, length)));
}

/** Writes `length` bytes of `buf` from its start. Returns the count written or -errno. */
export function write(fd: number, buf: Buffer, length: number): number {
  return orErrno(Number(raw.write(fd, buf, length)));
}

export function shutdown(fd: number, how: number): number {
  return orErrno(raw.shutdown(fd, how));
}

/** A non-blocking eventfd: the control plane writes it to wake a worker's loop. */
export function eventfd(): number {
  return check("eventfd", raw.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
}

/** Two connected sockets (AF_UNIX by default), non-blocking and close-on-exec. */
export function socketpair(type = 1): [number, number] {
  const sv = Buffer.alloc(8);
  check("socketpair", raw.socketpair(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv));
  return [sv.readInt32LE(0), sv.readInt32LE(4)];
}

const F_DUPFD_CLOEXEC = 1030;

/** A second, close-on-exec descriptor of the same open file, owned apart from the first. */
export function dupFd(fd: number): number {
  return check("fcntl(F_DUPFD_CLOEXEC)", raw.fcntl(fd, F_DUPFD_CLOEXEC, 0));
}

/** close(2) for the loop: returns 0 or -errno, never throws (the fd is gone either way). */
export function closeFd(fd: number): number {
  return orErrno(raw.close(fd));
}

/** A non-blocking, close-on-exec TCP socket for `family` (AF_INET/AF_INET6). Returns the fd or -errno (EMFILE). */
export function tcpSocket(family: number): number {
  return orErrno(raw.socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
}

const intOpt = Buffer.alloc(8);
const intLen = [4];

/** An int socket option; 0 or -errno. */
export function setIntOption(fd: number, level: number, name: number, value: number): number {
  intOpt.writeInt32LE(value, 0);
  return orErrno(raw.setsockopt(fd, level, name, intOpt, 4));
}

/**
 * The pending error of a socket (SO_ERROR, cleared by reading it): 0 when a non-blocking connect succeeded, else
 * the errno it failed with (ECONNREFUSED, ETIMEDOUT, ...). Returns -errno if getsockopt itself fails.
 */
export function socketError(fd: number): number {
  intLen[0] = 4;
  const r = raw.getsockopt(fd, SOL_SOCKET, SO_ERROR, intOpt, intLen);
  return r < 0 ? -koffi.errno() : intOpt.readInt32LE(0);
}

const lingerZero = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]);

/** SO_LINGER {on, 0}: the next close() sends a RST and drops unsent data, so the peer sees a reset, not an EOF. */
export function setLingerZero(fd: number): number {
  return orErrno(raw.setsockopt(fd, SOL_SOCKET, SO_LINGER, lingerZero, lingerZero.length));
}

/** The local address of a socket as a raw sockaddr (decode with sockaddr.ts); throws on failure. */
export function getsockname(fd: number): Buffer {
  const addr = Buffer.alloc(28);
  const len = [addr.length];
  check("getsockname", raw.getsockname(fd, addr, len));
  return addr.subarray(0, len[0]);
}

const peerAddr = Buffer.alloc(28);
const peerLen = [peerAddr.length];

/**
 * The connected peer's struct sockaddr (decode with sockaddr.ts), or undefined when the peer is gone (ENOTCONN).
 * Called once or twice per connection, so it fills one buffer per thread: the result is valid until the next call.
 */
export function getpeername(fd: number): Buffer | undefined {
  peerLen[0] = peerAddr.length;
  if (raw.getpeername(fd, peerAddr, peerLen) < 0) return undefined;
  return peerAddr.subarray(0, peerLen[0]);
}

export interface ResourceLimit {
  soft: bigint;
  hard: bigint;
}

/** getrlimit(2), e.g. RLIMIT_NOFILE. */
export function getrlimit(resource: number): ResourceLimit {
  const buf = Buffer.alloc(16);
  check("getrlimit", raw.getrlimit(resource, buf));
  return { soft: buf.readBigUInt64LE(0), hard: buf.readBigUInt64LE(8) };
}

/** setrlimit(2); process-wide, so only for a process of its own (a test's child). */
export function setrlimit(resource: number, limit: ResourceLimit): void {
  const buf = Buffer.alloc(16);
  buf.writeBigUInt64LE(limit.soft, 0);
  buf.writeBigUInt64LE(limit.hard, 8);
  check("setrlimit", raw.setrlimit(resource, buf));
}
