import { IdentityError } from "../identity/errors.js";
import { requestJson } from "../identity/https-json.js";
import type { ApiRequestConfig } from "../kube/api/config.js";
import type { ReviewedCaller, TokenReviewer } from "./token-reviewer.js";

export const NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name";

export interface KubeTokenReviewerOptions {
  /**
   * The API server and the CA's own credentials, from the same configuration its pod watch uses (`--kube`: the
   * pod's service account, whose projected token is re-read for every request; `--kubeconfig FILE`).
   */
  api: ApiRequestConfig;
  /**
   * Users allowed to ask for certificates, e.g. `system:serviceaccount:ambit-system:ambit`. Required: every pod's
   * bound service-account token carries its node name, so without this any pod could act as its node's agent.
   */
  allowedUsers: string[];
  /** Audiences the agent's token must be bound to (TokenReview spec.audiences). */
  audiences?: string[];
  timeoutMs?: number;
}

interface TokenReviewStatus {
  authenticated?: boolean;
  error?: string;
  audiences?: string[];
  user?: { username?: string; extra?: Record<string, string[]> };
}

/**
 * Cluster mode: asks the API server (POST /apis/authentication.k8s.io/v1/tokenreviews) whether the agent's token
 * is valid and reads the node it was issued for from the token's `extra` claims, which the API server fills for
 * tokens bound to a pod (Kubernetes >= 1.30, or projected tokens with node binding). `ambit ca` puts a
 * CachingTokenReviewer (review-cache.ts) in front of it, so the API server sees a bounded number of reviews.
 */
export class KubeTokenReviewer implements TokenReviewer {
  readonly #options: KubeTokenReviewerOptions;
  readonly #allowed: Set<string>;

  constructor(options: KubeTokenReviewerOptions) {
    this.#options = options;
    this.#allowed = new Set(options.allowedUsers);
  }

  async review(token: string, admit?: () => void): Promise<ReviewedCaller | undefined> {
    admit?.();
    const url = `${this.#options.api.server}/apis/authentication.k8s.io/v1/tokenreviews`;
    let status: number;
    let body: unknown;
    try {
      const { tls, headers } = await this.#options.api.requestOptions();
      const { ca, ...rest } = tls;
      const spec = this.#options.audiences ? { token, audiences: this.#options.audiences } : { token };
      ({ status, body } = await requestJson(url, {
        method: "POST",
        ...(ca ? { ca: ca as string } : {}),
        tls: rest,
        headers,
        body: { apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", spec },
        timeoutMs: this.#options.timeoutMs ?? 5000,
      }));
    } catch (cause) {
      throw new IdentityError("token_review_failed", `TokenReview request to ${url} failed`, { cause });
    }
    if (status !== 200 && status !== 201) {
      throw new IdentityError("token_review_failed", `TokenReview answered HTTP ${status}`, { cause: body });
    }
    const review = (body as { status?: TokenReviewStatus } | undefined)?.status;
    if (!review?.authenticated) return undefined;
    const user = review.user?.username ?? "";
    if (!this.#allowed.has(user)) return undefined;
    const wanted = this.#options.audiences;
    if (wanted && !wanted.some((a) => review.audiences?.includes(a))) return undefined;
    const nodeName = review.user?.extra?.[NODE_NAME_EXTRA]?.[0];
    return nodeName ? { nodeName, user } : undefined;
  }
}
