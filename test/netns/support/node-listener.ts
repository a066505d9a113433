import type { Server } from "node:net";
import type { ServedListener } from "../../../agent/redirect/enroller.js";
import { LISTEN_BACKLOG } from "../../../native-bindings/sockets.js";

/**
 * An in-pod listener served by a Node server, for tests and benches of the redirector without the data plane. The
 * backlog is passed as an argument: Node calls listen(2) again on a handed fd, with 511 unless told
 * (native-bindings/sockets.ts, LISTEN_BACKLOG).
 */
export function serveWithNode(server: Server, fd: number): ServedListener {
  server.listen({ fd }, LISTEN_BACKLOG);
  return {
    get listening() {
      return server.listening;
    },
    address: () => {
      const a = server.address();
      return a && typeof a === "object" ? `${a.address}:${a.port}` : undefined;
    },
    close: () => void server.close(),
  };
}
