import type { H2Stream, StreamHandlers } from "../../agent/h2/stream.js";

/**
 * Handlers for a stream that a test or bench drives: data is acknowledged at once, a reset throws (it is never
 * expected), the rest does nothing; `over` replaces what the caller cares about.
 */
export function handlers(stream: H2Stream, over: Partial<StreamHandlers>): StreamHandlers {
  return {
    data: (c) => stream.consumed(c.length),
    end: () => {},
    reset: (code) => {
      throw new Error(`stream ${stream.id} reset (${code})`);
    },
    drain: () => {},
    close: () => {},
    ...over,
  };
}
