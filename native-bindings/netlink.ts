/**
 * An rtnetlink (NETLINK_ROUTE) socket in the calling thread's current network namespace: open, send one message,
 * read one answer, close. What the messages say is agent code's business (agent/redirect/return-routing.ts).
 */
import koffi from "koffi";
import { SyscallError } from "./errors.js";
import { EAGAIN } from "./io.js";
import { closeFdQuietly, SOCK_CLOEXEC, SOCK_NONBLOCK, setsockoptInt, socket } from "./libc.js";

export { closeFdQuietly };

const libc = koffi.load("libc.so.6");

const raw = {
  send: libc.func("intptr_t send(int fd, const void *buf, uintptr_t len, int flags)"),
  recv: libc.func("intptr_t recv(int fd, _Out_ void *buf, uintptr_t len, int flags)"),
};

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const NETLINK_ROUTE = 0;
const SOL_NETLINK = 270;
/** Errors echo the request's header only, not the whole request: answers stay small and bounded. */
const NETLINK_CAP_ACK = 10;
/** Errors carry the kernel's reason as text ("IPv6 is disabled on nexthop device"). */
const NETLINK_EXT_ACK = 11;

/**
 * A NETLINK_ROUTE socket, close-on-exec. Non-blocking: the kernel handles a request inside send() and has queued
 * its answer by the time send() returns, so a read that would block means there is no answer, never "not yet".
 */
export function openRouteSocket(): number {
  const fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
  try {
    setsockoptInt(fd, SOL_NETLINK, NETLINK_CAP_ACK, 1, "NETLINK_CAP_ACK");
    setsockoptInt(fd, SOL_NETLINK, NETLINK_EXT_ACK, 1, "NETLINK_EXT_ACK");
    return fd;
  } catch (err) {
    closeFdQuietly(fd);
    throw err;
  }
}

/** Sends one message to the kernel (an unconnected netlink socket sends to port 0, the kernel), all or nothing. */
export function sendNetlink(fd: number, message: Buffer): void {
  if (Number(raw.send(fd, message, message.length, 0)) < 0) throw new SyscallError("send", koffi.errno(), "netlink");
}

/**
 * The datagram waiting on the socket, cut to `size` bytes if longer. Nothing queued is a SyscallError with errno
 * EAGAIN (its code reads EWOULDBLOCK, the same number).
 */
export function receiveNetlink(fd: number, size: number): Buffer {
  const buf = Buffer.alloc(size);
  const n = Number(raw.recv(fd, buf, size, 0));
  if (n < 0) {
    const errno = koffi.errno();
    throw new SyscallError("recv", errno, errno === EAGAIN ? "no netlink answer queued" : "netlink");
  }
  return buf.subarray(0, n);
}
