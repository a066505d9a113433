import { constants } from "node:os";

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, value]) => [value, name]));

/** Name of an errno value ("ECONNREFUSED"), or "E<number>" for one Node does not know. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

/**
 * A libc call failed. `code` is the errno name, like Node's own system errors, so callers can match on it
 * the same way they match `ECONNREFUSED` from a net.Socket.
 */
export class SyscallError extends Error {
  readonly call: string;
  readonly errno: number;
  readonly code: string;

  constructor(call: string, errno: number, detail?: string) {
    const code = errnoName(errno);
    super(`${call} failed: ${code}${detail ? ` (${detail})` : ""}`);
    this.name = "SyscallError";
    this.call = call;
    this.errno = errno;
    this.code = code;
  }
}

/** libnftables refused a batch; `message` holds what the kernel or the parser said. */
export class NftablesError extends Error {
  readonly code = "nftables_rejected";

  constructor(message: string) {
    super(message);
    this.name = "NftablesError";
  }
}
