import { connectFromPodFd } from "../pod-netns.js";
import type { ProxyContext } from "./context.js";
import type { OriginalDestination } from "./original-destination.js";
import type { LocalWorkload } from "./workload-index.js";

/**
 * A connection from inside the namespace of `self` (an enrolled pod) to `dst`, marked so the pod's rules let it through. No Nagle: the
 * proxy forwards whatever it has as soon as it has it, and a held-back small segment would meet the peer's delayed
 * ACK (40 ms stalls on request/response traffic).
 */
export async function connectApp(ctx: ProxyContext, self: LocalWorkload, dst: OriginalDestination) {
  const buffers = ctx.tuning.socketBuffer;
  const socket = await connectFromPodFd(
    self.netns,
    {
      address: dst.address,
      port: dst.port,
      mark: ctx.mark,
      ...(dst.scopeId ? { scopeId: dst.scopeId } : {}),
      ...(buffers ? { sendBuffer: buffers, receiveBuffer: buffers } : {}),
    },
    ctx.log,
  );
  socket.setNoDelay(true);
  return socket;
}
