/**
 * `Status` objects as the real API server sends them for failures (HTTP bodies and watch ERROR events). Pure.
 */

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  causes?: Array<{ reason: string; message: string; field?: string }>;
  retryAfterSeconds?: number;
}

export interface Status {
  kind: "Status";
  apiVersion: "v1";
  metadata: { continue?: string };
  status: "Failure" | "Success";
  message: string;
  reason: string;
  details?: StatusDetails;
  code: number;
}

export function failure(code: number, reason: string, message: string, details?: StatusDetails): Status {
  const s: Status = { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code };
  if (details) s.details = details;
  return s;
}

export const unauthorized = (): Status => failure(401, "Unauthorized", "Unauthorized");

export const pathNotFound = (): Status =>
  failure(404, "NotFound", "the server could not find the requested resource", {});

export const badRequest = (message: string): Status => failure(400, "BadRequest", message);

export function notFound(group: string, plural: string, name: string): Status {
  const details: StatusDetails = group ? { name, group, kind: plural } : { name, kind: plural };
  return failure(404, "NotFound", `${plural}${group ? `.${group}` : ""} "${name}" not found`, details);
}

export function alreadyExists(group: string, plural: string, name: string): Status {
  const details: StatusDetails = group ? { name, group, kind: plural } : { name, kind: plural };
  return failure(409, "AlreadyExists", `${plural}${group ? `.${group}` : ""} "${name}" already exists`, details);
}

export function conflict(group: string, plural: string, name: string, message: string): Status {
  const details: StatusDetails = group ? { name, group, kind: plural } : { name, kind: plural };
  return failure(409, "Conflict", message, details);
}

export function invalid(kind: string, name: string, message: string): Status {
  return failure(422, "Invalid", `${kind} "${name}" is invalid: ${message}`, { name, kind });
}

/** 410 for a watch from (or an exact list at) a resourceVersion older than the history kept. */
export const expired = (message: string): Status => failure(410, "Expired", message);

/** A continue token whose snapshot is compacted: 410 with a token that resumes at the same key, inconsistently. */
export function continueExpired(inconsistentToken: string): Status {
  const s = expired(
    "The provided continue parameter is too old to display a consistent list result. You can start a new list " +
      "without the continue parameter, or use the continue token in this response to retrieve the remainder of " +
      "the results. Continuing with the provided token results in an inconsistent list - objects that were " +
      "created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
  );
  s.metadata.continue = inconsistentToken;
  return s;
}

/** A resourceVersion newer than any this server has: the real server waits ~3 s for it, then answers this. */
export function tooLargeResourceVersion(wanted: number, current: number): Status {
  return failure(504, "Timeout", `Timeout: Too large resource version: ${wanted}, current: ${current}`, {
    causes: [{ reason: "ResourceVersionTooLarge", message: "Too large resource version" }],
    retryAfterSeconds: 1,
  });
}

export const methodNotAllowed = (method: string): Status =>
  failure(405, "MethodNotAllowed", `the server does not allow this method on the requested resource: ${method}`);

/** Injected faults: the reasons the real server gives for these codes. */
export function injected(code: number, retryAfterSeconds?: number): Status {
  const reasons: Record<number, [string, string]> = {
    429: ["TooManyRequests", "Too many requests, please try again later."],
    500: ["InternalError", "Internal error occurred: injected by the test API server"],
    503: ["ServiceUnavailable", "The server is currently unable to handle the request"],
    504: ["Timeout", "Timeout: request did not complete within the allowed duration"],
  };
  const [reason, message] = reasons[code] ?? ["InternalError", `injected failure ${code}`];
  return failure(code, reason, message, retryAfterSeconds === undefined ? undefined : { retryAfterSeconds });
}
