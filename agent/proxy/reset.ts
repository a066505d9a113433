import type { Socket } from "node:net";

/**
 * Abort a TCP connection with RST: the app sees ECONNRESET, not a clean FIN that could pass for a complete
 * response.
 */
export function resetSocket(s: Socket): void {
  if (!s.destroyed) s.resetAndDestroy();
}
