import { closeFd, getpeername, setLingerZero } from "../../native-bindings/io.js";
import { decodeSockaddr } from "../../native-bindings/sockaddr.js";
import { socketClosed } from "./connection-limits.js";

/**
 * Closes a socket the data plane owns. Every socket a connection holds is closed here, so the connection limits
 * (connection-limits.ts) hear of each close, wherever the connection ended.
 */
export function closeSocket(fd: number): void {
  closeFd(fd);
  socketClosed(fd);
}

/**
 * Closes an fd we own with a RST (SO_LINGER 0): the app sees ECONNRESET at once, not a clean FIN that could pass
 * for a complete response.
 */
export function resetFd(fd: number): void {
  setLingerZero(fd);
  closeSocket(fd);
}

/** The connected peer's IP ("" once it is gone). */
export function peerAddress(fd: number): string {
  const addr = getpeername(fd);
  return addr ? decodeSockaddr(addr).address : "";
}
