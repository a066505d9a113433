import { constants, type Http2Stream } from "node:http2";
import { Socket } from "node:net";
import type { Duplex } from "node:stream";

function isHttp2Stream(s: Duplex): s is Duplex & Http2Stream {
  return "rstCode" in s && typeof (s as Partial<Http2Stream>).close === "function";
}

/**
 * Tear a connection down the way its protocol signals an abort: TCP with RST (the app sees ECONNRESET, not a clean
 * FIN that could pass for a complete response), an HTTP/2 stream with RST_STREAM.
 */
export function resetDuplex(s: Duplex): void {
  if (s.destroyed) return;
  if (s instanceof Socket) s.resetAndDestroy();
  else if (isHttp2Stream(s)) s.close(constants.NGHTTP2_CANCEL);
  else s.destroy();
}
