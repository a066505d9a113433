import { closeFd, getpeername, setLingerZero } from "../../native-bindings/io.js";
import { decodeSockaddr } from "../../native-bindings/sockaddr.js";

/**
 * Closes an fd we own with a RST (SO_LINGER 0): the app sees ECONNRESET at once, not a clean FIN that could pass
 * for a complete response.
 */
export function resetFd(fd: number): void {
  setLingerZero(fd);
  closeFd(fd);
}

/** The connected peer's IP ("" once it is gone). */
export function peerAddress(fd: number): string {
  const addr = getpeername(fd);
  return addr ? decodeSockaddr(addr).address : "";
}
