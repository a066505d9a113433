import { readFile } from "node:fs/promises";
import type { CertificateSource, SignRequest, SignResponse } from "./certificate-source.js";
import { CaRequestError, type IdentityErrorCode } from "./errors.js";
import { requestJson } from "./https-json.js";

export interface CaClientOptions {
  /** Base URL of `ambit ca`, e.g. https://ambit-ca.ambit-system.svc:15012 */
  url: string;
  /** Root bundle the CA's serving certificate chains to (the mesh trust bundle). */
  caBundleFile: string;
  /** Bearer token file; re-read on every request because projected service-account tokens rotate. */
  tokenFile: string;
  timeoutMs?: number;
}

// Codes the CA server answers with that the agent understands; anything else is reported as the fallback.
const SERVER_CODES = new Set<string>([
  "unauthenticated",
  "forbidden",
  "bad_request",
  "body_too_large",
  "bad_san",
  "bad_csr",
  "csr_signature",
  "csr_mismatch",
  "token_review_failed",
  "token_review_busy",
  "rate_limited",
]);

// Retry-After in seconds (the CA never sends the HTTP-date form); the agent waits at least that long, capped by its
// own backoff ceiling (cert-manager.ts).
function retryAfterMs(value: string | string[] | undefined): number | undefined {
  return typeof value === "string" && /^\d{1,6}$/.test(value) ? Number(value) * 1000 : undefined;
}

interface ErrorBody {
  code?: string;
  message?: string;
}

/** The agent's side of `ambit ca` (see ca-server.ts). */
export class RemoteCertificateSource implements CertificateSource {
  private readonly base: string;

  constructor(private readonly options: CaClientOptions) {
    this.base = options.url.replace(/\/+$/, "");
  }

  async sign(req: SignRequest): Promise<SignResponse> {
    const body = {
      csr: req.csrPem,
      identity: { namespace: req.identity.namespace, serviceAccount: req.identity.serviceAccount },
      pod: { namespace: req.pod.namespace, name: req.pod.name },
    };
    const res = (await this.call("POST", "/v1/sign", body)) as { certChain?: unknown; trustBundle?: unknown };
    if (typeof res.certChain !== "string" || typeof res.trustBundle !== "string") {
      throw new CaRequestError("ca_unavailable", 200, "CA answer lacks certChain/trustBundle");
    }
    return { certChainPem: res.certChain, trustBundlePem: res.trustBundle };
  }

  async trustBundle(): Promise<string> {
    const res = (await this.call("GET", "/v1/bundle")) as { trustBundle?: unknown };
    if (typeof res.trustBundle !== "string") throw new CaRequestError("ca_unavailable", 200, "CA bundle missing");
    return res.trustBundle;
  }

  private async call(method: "GET" | "POST", path: string, body?: unknown): Promise<unknown> {
    const url = `${this.base}${path}`;
    let answer: Awaited<ReturnType<typeof requestJson>>;
    try {
      const [ca, token] = await Promise.all([
        readFile(this.options.caBundleFile, "utf8"),
        readFile(this.options.tokenFile, "utf8"),
      ]);
      answer = await requestJson(url, {
        method,
        ca,
        body,
        headers: { authorization: `Bearer ${token.trim()}` },
        timeoutMs: this.options.timeoutMs ?? 10_000,
      });
    } catch (cause) {
      throw new CaRequestError("ca_unavailable", 0, `CA request ${method} ${url} failed`, { cause });
    }
    if (answer.status === 200) return answer.body ?? {};
    const err = (answer.body ?? {}) as ErrorBody;
    // 5xx means "try again later"; 4xx is a refusal that retrying alone will not fix (429 aside: later, less often),
    // but all keep their code.
    const fallback: IdentityErrorCode = answer.status >= 500 ? "ca_unavailable" : "ca_refused";
    const code = err.code && SERVER_CODES.has(err.code) ? (err.code as IdentityErrorCode) : fallback;
    throw new CaRequestError(
      code,
      answer.status,
      `CA refused ${method} ${path}: HTTP ${answer.status} ${err.message ?? ""}`.trim(),
      { retryAfterMs: retryAfterMs(answer.headers["retry-after"]) },
    );
  }
}
