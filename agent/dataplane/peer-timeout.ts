import { setKeepalive, setUserTimeout } from "../../native-bindings/sockets.js";
import type { LineLog } from "../log.js";

/**
 * Make an HBONE connection (`fd`) notice a peer that vanished (its node gone, a route dropped) within about `ms`:
 * keepalive probes a third of `ms` apart once it is idle, three unanswered ones end it, and data the peer never
 * acknowledges ends it after `ms`. Without this a silent peer holds a pooled session, and every stream sent on it,
 * for the kernel's default of many minutes.
 */
export function watchPeerFd(fd: number, ms: number, log: LineLog): void {
  const step = Math.max(1, Math.round(ms / 3000));
  try {
    setKeepalive(fd, step, step, 3);
    setUserTimeout(fd, ms);
  } catch (err) {
    log.warn({ err }, "could not set keepalive on an HBONE connection; a vanished peer will be noticed late");
  }
}
