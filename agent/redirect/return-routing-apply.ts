/**
 * Effects of return routing (return-routing.ts): its requests sent over one rtnetlink socket, in the calling thread's
 * current network namespace (the caller enters the pod's, as for its nftables table).
 */
import { SyscallError } from "../../native-bindings/errors.js";
import { closeFdQuietly, openRouteSocket, receiveNetlink, sendNetlink } from "../../native-bindings/netlink.js";
import { ReturnRoutingError } from "./errors.js";
import {
  FAMILY_UNAVAILABLE_ERRNOS,
  type NetlinkAck,
  parseNetlinkAck,
  type ReturnRoutingRequest,
  returnRoutingRequests,
  withSequence,
} from "./return-routing.js";

/** Room for an answer: an error echoes the request's header only (NETLINK_CAP_ACK) plus the kernel's reason. */
const ANSWER_BYTES = 4096;

export interface ReturnRoutingFamily {
  family: 4 | 6;
  /** A required family that the kernel cannot route fails the install; another one is skipped. */
  required: boolean;
}

export interface ReturnRoutingResult {
  installed: Array<4 | 6>;
  /** Families left out because the namespace cannot route them (IPv6 disabled), with the kernel's refusal. */
  skipped: Array<{ family: 4 | 6; reason: string }>;
}

/**
 * Installs return routing for each family, in order. Already there is fine (re-enrollment). On failure, whatever
 * this call added is taken back before the error is thrown, so the namespace is as it was; a family that is not
 * required and that the kernel cannot route is taken back alone and reported as skipped.
 */
export function installReturnRouting(families: readonly ReturnRoutingFamily[]): ReturnRoutingResult {
  return withRouteSocket((link) => {
    const added: ReturnRoutingRequest[] = [];
    const result: ReturnRoutingResult = { installed: [], skipped: [] };
    for (const { family, required } of families) {
      const ours = added.length;
      try {
        for (const request of returnRoutingRequests("install", [family])) {
          if (link.apply(request) && request.undo) added.push(request.undo);
        }
      } catch (err) {
        if (!(err instanceof ReturnRoutingError)) throw err;
        const unavailable = err.refusedWith !== undefined && FAMILY_UNAVAILABLE_ERRNOS.includes(err.refusedWith);
        // This family's additions first, then the earlier families' (all of them unless the family is skipped).
        const stuck = link.takeBack(added.splice(ours));
        if (required || !unavailable || stuck.length > 0) throw err.leaving([...stuck, ...link.takeBack(added)]);
        result.skipped.push({ family, reason: err.message });
        continue;
      }
      result.installed.push(family);
    }
    return result;
  });
}

/**
 * Removes return routing for each family; what is already gone is fine. Every removal is attempted even after one
 * fails (the rest still goes), then the first failure is thrown, naming the others.
 */
export function removeReturnRouting(families: ReadonlyArray<4 | 6>): void {
  withRouteSocket((link) => {
    const failures = link.applyAll(returnRoutingRequests("remove", families));
    const [first, ...rest] = failures;
    if (first) throw first.leaving(rest.map((f) => f.message));
  });
}

function withRouteSocket<T>(fn: (link: RouteSocket) => T): T {
  const link = new RouteSocket();
  try {
    return fn(link);
  } finally {
    link.close();
  }
}

class RouteSocket {
  readonly #fd = openRouteSocket();
  #seq = 0;

  /** Sends one request; true when it changed something, false when the wanted state already held. */
  apply(request: ReturnRoutingRequest): boolean {
    const { errno, detail } = this.#exchange(request);
    if (errno === 0) return true;
    if (request.tolerated.includes(errno)) return false;
    const cause = new SyscallError("rtnetlink", errno, detail);
    throw new ReturnRoutingError(request.what, cause.message, { cause, refusedWith: errno });
  }

  /** Every request attempted; the failures. */
  applyAll(requests: readonly ReturnRoutingRequest[]): ReturnRoutingError[] {
    const failures: ReturnRoutingError[] = [];
    for (const request of requests) {
      try {
        this.apply(request);
      } catch (err) {
        if (!(err instanceof ReturnRoutingError)) throw err;
        failures.push(err);
      }
    }
    return failures;
  }

  /** Undoes additions, last first; names what could not be undone. */
  takeBack(undos: readonly ReturnRoutingRequest[]): string[] {
    return this.applyAll([...undos].reverse()).map((f) => f.message);
  }

  close(): void {
    closeFdQuietly(this.#fd);
  }

  #exchange(request: ReturnRoutingRequest): NetlinkAck {
    const seq = ++this.#seq;
    try {
      sendNetlink(this.#fd, withSequence(request.message, seq));
      return parseNetlinkAck(receiveNetlink(this.#fd, ANSWER_BYTES), seq);
    } catch (cause) {
      throw new ReturnRoutingError(request.what, cause instanceof Error ? cause.message : String(cause), { cause });
    }
  }
}
