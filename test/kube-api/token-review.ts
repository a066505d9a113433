/**
 * TokenReview (authentication.k8s.io/v1) answered from a table, with the real server's audience rules: a token
 * is valid for the audiences it was issued for; a review names the audiences it wants (default: the API server's
 * own), the token must share at least one, and status.audiences is that intersection. Pure.
 */

export interface TokenUser {
  username: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
}

export interface TokenEntry {
  user: TokenUser;
  /** Audiences the token is bound to; default: the API server's own (API_AUDIENCES). */
  audiences?: string[];
}

/** What a service-account token is bound to by default (the API server's --api-audiences). */
export const API_AUDIENCES = ["https://kubernetes.default.svc.cluster.local"];

export interface TokenReviewAnswer {
  /** HTTP status: 201 for a review, 400 for a request that is not one. */
  code: number;
  body: unknown;
}

const MAX_TOKEN_CHARS = 64 * 1024;

export function reviewToken(request: unknown, table: ReadonlyMap<string, TokenEntry>): TokenReviewAnswer {
  const r = request as { apiVersion?: unknown; kind?: unknown; spec?: { token?: unknown; audiences?: unknown } } | null;
  const spec = r?.spec;
  const token = spec?.token;
  const wanted = spec?.audiences;
  const okAudiences = wanted === undefined || (Array.isArray(wanted) && wanted.every((a) => typeof a === "string"));
  if (
    r?.kind !== "TokenReview" ||
    typeof token !== "string" ||
    !token ||
    token.length > MAX_TOKEN_CHARS ||
    !okAudiences
  ) {
    return {
      code: 400,
      body: {
        kind: "Status",
        apiVersion: "v1",
        metadata: {},
        status: "Failure",
        message: "the body of the request was not a TokenReview with spec.token",
        reason: "BadRequest",
        code: 400,
      },
    };
  }
  const targets = (wanted as string[] | undefined)?.length ? (wanted as string[]) : API_AUDIENCES;
  const entry = table.get(token);
  let status: Record<string, unknown>;
  if (!entry) {
    status = { user: {}, error: "[invalid bearer token, square/go-jose: error in cryptographic primitive]" };
  } else {
    const bound = entry.audiences ?? API_AUDIENCES;
    const shared = targets.filter((a) => bound.includes(a));
    status = shared.length
      ? { authenticated: true, user: entry.user, audiences: shared }
      : {
          user: {},
          error: `[invalid bearer token, token audiences ${JSON.stringify(bound)} is invalid for the target audiences ${JSON.stringify(targets)}]`,
        };
  }
  const specOut = wanted === undefined ? { token } : { token, audiences: wanted };
  return {
    code: 201,
    body: {
      kind: "TokenReview",
      apiVersion: "authentication.k8s.io/v1",
      metadata: { creationTimestamp: null },
      spec: specOut,
      status,
    },
  };
}
