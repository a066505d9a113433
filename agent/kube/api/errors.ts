import { AmbitError } from "../../errors.js";

/**
 * Stable reasons a Kubernetes API client operation fails (log fields and error codes; never change meaning).
 */
export type KubeApiErrorCode =
  | "kubeconfig_invalid" // the kubeconfig or the in-cluster environment cannot be used (missing, unparsable, no cluster)
  | "credentials_unreadable" // a CA, client certificate or token file named by the configuration cannot be read
  | "unreachable" // no connection (refused, reset, TLS failure) or the connection broke mid-answer
  | "timeout" // no answer (headers, or a whole list page) within the request's time limit
  | "http_status" // the API server answered with a non-200 status (its Status message is in the error)
  | "bad_response" // an answer that is not what the API defines (not JSON, no resourceVersion, a line too long)
  | "not_synced" // start(): not every resource completed its first list in time (the source keeps trying)
  | "closed"; // the source was closed while the operation was pending

export class KubeApiError extends AmbitError {
  declare readonly code: KubeApiErrorCode;
  /** HTTP status of the answer (http_status only). */
  readonly httpStatus: number | undefined;
  /** The Status reason the API server gave (e.g. "Expired", "Forbidden"), if any. */
  readonly reason: string | undefined;
  /** What Retry-After (or the Status' details.retryAfterSeconds) asked for, in ms. */
  readonly retryAfterMs: number | undefined;

  constructor(
    code: KubeApiErrorCode,
    message: string,
    options: { cause?: unknown; httpStatus?: number; reason?: string; retryAfterMs?: number } = {},
  ) {
    super(code, message, { cause: options.cause });
    this.httpStatus = options.httpStatus;
    this.reason = options.reason;
    this.retryAfterMs = options.retryAfterMs;
  }
}
