import type { Socket } from "node:net";
import { ErrorCode, errorName } from "../h2/constants.js";
import { H2Error } from "../h2/errors.js";
import type { HeaderList } from "../h2/hpack.js";
import type { H2Stream } from "../h2/stream.js";
import type { RelayResult } from "./relay.js";

/** The most plaintext one TLS record carries. */
const TLS_RECORD = 16384;

/**
 * Relay between a TCP socket and an HBONE stream, both ways. Back-pressure: the socket is paused while the stream
 * cannot take more, and received data is acknowledged to the peer (its window reopened) only once the socket has
 * accepted it. A FIN becomes END_STREAM and back; a reset on either side resets the other (RST, RST_STREAM).
 * In the result, aToB counts socket -> stream bytes. `onDone` runs once, after both sides are closed.
 */
export function relayStream(
  socket: Socket,
  stream: H2Stream,
  onDone: (result: RelayResult) => void,
  onHeaders?: (headers: HeaderList) => void,
): void {
  const result: RelayResult = { aToB: 0, bToA: 0 };
  let socketClosed = false;
  let streamClosed = false;
  let unacked = 0;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  const finish = () => {
    if (socketClosed && streamClosed) onDone(result);
  };
  stream.attach({
    headers: (h) => onHeaders?.(h),
    data: (chunk) => {
      result.bToA += chunk.length;
      // TLS hands decrypted data over one 16 KiB record at a time; in a bulk transfer, corking until the event
      // loop's check phase turns a burst of records into one writev instead of a syscall each.
      if (!corked && chunk.length >= TLS_RECORD) {
        corked = true;
        socket.cork();
        setImmediate(uncork);
      }
      if (socket.write(chunk)) stream.consumed(chunk.length);
      else unacked += chunk.length;
    },
    end: () => socket.end(),
    reset: (code) => {
      result.error ??= new H2Error(code, `stream reset (${errorName(code)})`);
      socket.resetAndDestroy();
    },
    drain: () => socket.resume(),
    close: () => {
      streamClosed = true;
      finish();
    },
  });
  socket.on("drain", () => {
    stream.consumed(unacked);
    unacked = 0;
  });
  socket.on("data", (chunk: Buffer) => {
    result.aToB += chunk.length;
    if (!stream.write(chunk)) socket.pause();
  });
  socket.on("end", () => stream.end());
  socket.on("error", (err) => {
    result.error ??= err;
  });
  socket.once("close", () => {
    socketClosed = true;
    // Closed without a clean FIN from its peer (an RST, or destroyed by us): abort the stream too.
    if (!socket.readableEnded) stream.reset(ErrorCode.CANCEL);
    finish();
  });
}
