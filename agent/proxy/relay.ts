import type { Socket } from "node:net";

export interface RelayResult {
  /** Bytes from `a` delivered to `b`, and back. */
  aToB: number;
  bToA: number;
  /** The first error either side reported, if the relay ended by error rather than by both sides closing. */
  error?: Error;
}

/**
 * Pipe two TCP sockets both ways: back-pressure through pipe(), half-close forwarded (one side's end() ends only
 * the other's write side), and an error on either side destroys the other with it, so a reset propagates instead
 * of leaving a half-dead connection. `onDone` runs once, after both sides are closed.
 */
export function relay(a: Socket, b: Socket, onDone: (result: RelayResult) => void, reset?: (s: Socket) => void): void {
  const result: RelayResult = { aToB: 0, bToA: 0 };
  let open = 2;
  const kill = reset ?? ((s: Socket) => s.destroy());
  const finish = () => {
    open -= 1;
    if (open === 0) onDone(result);
  };
  const wire = (from: Socket, to: Socket, count: (n: number) => void) => {
    from.on("data", (chunk: Buffer) => count(chunk.length));
    from.on("error", (err) => {
      result.error ??= err;
      if (!to.destroyed) kill(to);
    });
    from.once("close", () => {
      // A side that closed without ending cleanly (no FIN) takes the other down with it.
      if (!from.readableEnded && !to.destroyed) to.destroy();
      finish();
    });
    from.pipe(to);
  };
  wire(a, b, (n) => {
    result.aToB += n;
  });
  wire(b, a, (n) => {
    result.bToA += n;
  });
}
