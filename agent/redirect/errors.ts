import { AmbitError } from "../errors.js";

/** Reasons an enrollment fails; each is a metric label and a log field. */
export type EnrollmentFailure =
  | "no_ips"
  | "invalid_plan"
  | "listener_failed"
  | "return_routing_failed"
  | "rules_rejected"
  | "unenroll_failed";

export class EnrollmentError extends AmbitError {
  readonly pod: string;

  constructor(code: EnrollmentFailure, pod: string, message: string, options?: { cause?: unknown }) {
    super(code, `${pod}: ${message}`, options);
    this.pod = pod;
  }
}

/**
 * A return-routing request (return-routing.ts) failed: the kernel refused it (`refusedWith` is the errno, and the
 * cause a SyscallError naming it), or the exchange itself failed (the cause says how).
 */
export class ReturnRoutingError extends AmbitError {
  /** The failed request in `ip` terms. */
  readonly request: string;
  readonly refusedWith: number | undefined;
  /**
   * What else the failed call leaves in the namespace against its purpose: additions it could not take back, or
   * other removals that failed too.
   */
  readonly leftBehind: readonly string[];
  readonly #reason: string;

  constructor(
    request: string,
    reason: string,
    options: { cause?: unknown; refusedWith?: number; leftBehind?: readonly string[] } = {},
  ) {
    const leftBehind = options.leftBehind ?? [];
    const left = leftBehind.length > 0 ? `; also left in place: ${leftBehind.join("; ")}` : "";
    super("return_routing_failed", `${request}: ${reason}${left}`, { cause: options.cause });
    this.request = request;
    this.refusedWith = options.refusedWith;
    this.leftBehind = leftBehind;
    this.#reason = reason;
  }

  /** This error, also naming what else stays in place after it. */
  leaving(more: readonly string[]): ReturnRoutingError {
    if (more.length === 0) return this;
    return new ReturnRoutingError(this.request, this.#reason, {
      cause: this.cause,
      refusedWith: this.refusedWith,
      leftBehind: [...this.leftBehind, ...more],
    });
  }
}
