import { AmbitError } from "../errors.js";

/** Reasons an enrollment fails; each is a metric label and a log field. */
export type EnrollmentFailure = "no_ips" | "invalid_plan" | "listener_failed" | "rules_rejected" | "unenroll_failed";

export class EnrollmentError extends AmbitError {
  readonly pod: string;

  constructor(code: EnrollmentFailure, pod: string, message: string, options?: { cause?: unknown }) {
    super(code, `${pod}: ${message}`, options);
    this.pod = pod;
  }
}
