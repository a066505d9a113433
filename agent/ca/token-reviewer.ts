import { createHash, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import { IdentityError } from "../identity/errors.js";

/** Who is calling the CA: the node an authenticated agent runs on. */
export interface ReviewedCaller {
  nodeName: string;
  /** The authenticated user name when the reviewer knows it (logged, not used for decisions). */
  user?: string;
}

/**
 * Turns a bearer token into the caller's node. Returns undefined for a token that is not valid (-> 401); throws
 * IdentityError `token_review_failed` when it cannot tell (-> 503, the agent retries).
 */
export interface TokenReviewer {
  /**
   * `admit`, when given, is called once before the reviewer asks an external system (the API server) about this
   * token, and never for an answer it already has; it throws to refuse (the CA's per-address rate limit).
   */
  review(token: string, admit?: () => void): Promise<ReviewedCaller | undefined>;
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

/**
 * Local mode: a JSON file `{"<token>": "<node name>"}`, read on every review so tokens can be added or revoked
 * without restarting the CA. Tokens are compared through fixed-length digests in constant time. It asks no one
 * else, so it never calls `admit`: local mode is not rate-limited.
 */
export class FileTokenReviewer implements TokenReviewer {
  constructor(private readonly path: string) {}

  async review(token: string): Promise<ReviewedCaller | undefined> {
    let table: unknown;
    try {
      table = JSON.parse(await readFile(this.path, "utf8"));
    } catch (cause) {
      throw new IdentityError("token_review_failed", `cannot read token file ${this.path}`, { cause });
    }
    if (typeof table !== "object" || table === null || Array.isArray(table)) {
      throw new IdentityError("token_review_failed", `token file ${this.path} is not a JSON object`);
    }
    const wanted = digest(token);
    let found: string | undefined;
    for (const [candidate, node] of Object.entries(table)) {
      if (timingSafeEqual(digest(candidate), wanted) && typeof node === "string" && node) found = node;
    }
    return found === undefined ? undefined : { nodeName: found };
  }
}
