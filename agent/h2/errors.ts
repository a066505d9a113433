import { AmbitError } from "../errors.js";
import { ErrorCode, errorName } from "./constants.js";

/**
 * An HTTP/2 protocol failure. `h2code` is the RFC 9113 error code sent to (or received from) the peer; `code` is
 * its name in lower case, the reason counted in metrics and logged.
 */
export class H2Error extends AmbitError {
  readonly h2code: number;

  constructor(h2code: number, message: string, options?: { cause?: unknown }) {
    super(errorName(h2code).toLowerCase(), message, options);
    this.h2code = h2code;
  }
}

export const protocolError = (message: string) => new H2Error(ErrorCode.PROTOCOL_ERROR, message);

/** A header block that cannot be decoded: the whole connection is unusable (its HPACK state is lost). */
export const compressionError = (message: string) => new H2Error(ErrorCode.COMPRESSION_ERROR, message);
