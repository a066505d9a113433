import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { AmbitError } from "../errors.js";
import type { MeshCa } from "../identity/ca.js";
import { CsrError, IdentityError } from "../identity/errors.js";
import { BodyTooLargeError, readBody, sendJson } from "../identity/https-json.js";
import { generateRsaKeyPair } from "../identity/keys.js";
import { refreshDelayMs } from "../identity/refresh-policy.js";
import { formatSpiffeId, type SpiffeId } from "../identity/spiffe.js";
import type { PodRecord } from "../kube/records.js";
import { type Logger, silentLogger } from "../log.js";
import { LogThrottle } from "../log-throttle.js";
import { authorizeSign } from "./authorize.js";
import { KeyedRateLimiter, RateLimitedError, type RateLimitOptions } from "./rate-limit.js";
import type { TokenReviewer } from "./token-reviewer.js";

export type PodLookup = (namespace: string, name: string) => PodRecord | undefined;

export interface CaServerOptions {
  ca: MeshCa;
  /** In cluster mode a CachingTokenReviewer (review-cache.ts) around the KubeTokenReviewer. */
  reviewer: TokenReviewer;
  /** Per source address, for token reviews that reach the API server (DEFAULT_ADDRESS_RATE_LIMIT). */
  rateLimit?: RateLimitOptions;
  /** Per authenticated node, for certificate requests (DEFAULT_NODE_RATE_LIMIT). */
  nodeRateLimit?: RateLimitOptions;
  lookupPod: PodLookup;
  host?: string;
  /** 0 picks a free port (tests). */
  port?: number;
  /** Names agents reach the CA by; they go into its serving certificate. */
  servingNames?: { dnsNames: string[]; ips: string[] };
  logger?: Logger;
}

export interface CaServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

interface RefusalDetails {
  /** A stable refinement of the code, answered and logged (which check refused, which limit). */
  reason?: string;
  /** Logged only: what the caller is not told. */
  detail?: string;
  headers?: Record<string, string>;
  /** Logged at debug level: one of many alike, already reported once. */
  quiet?: boolean;
}

/** An error answer: `code` and `reason` are stable (metrics, clients), `message` is for people. */
class Refusal extends AmbitError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
    readonly details: RefusalDetails = {},
  ) {
    super(code, message);
  }
}

const ENDPOINTS = new Set(["/v1/sign", "/v1/bundle"]);
/** Refusals anyone can cause without a token (no such endpoint, wrong method, no or a bad token). */
const ANYONE = new Set([401, 404, 405]);

/** Other identity errors of a CSR the CA refuses with 400; a CSR that cannot be read is a CsrError (with a reason). */
const CSR_CODES = new Set(["csr_signature", "csr_mismatch", "bad_san"]);

interface SignBody {
  csr: string;
  identity: { namespace: string; serviceAccount: string };
  pod: { namespace: string; name: string };
}

function isSignBody(b: unknown): b is SignBody {
  const o = b as Partial<SignBody> | null;
  const str = (v: unknown) => typeof v === "string" && v.length > 0 && v.length < 64 * 1024;
  return (
    typeof o === "object" &&
    o !== null &&
    str(o.csr) &&
    str(o.identity?.namespace) &&
    str(o.identity?.serviceAccount) &&
    str(o.pod?.namespace) &&
    str(o.pod?.name)
  );
}

function bearerToken(req: IncomingMessage): string | undefined {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "");
  return m?.[1];
}

/** 429 with Retry-After, the limit's scope as the reason; warned once per episode, not once per request of a flood. */
function rateLimited(err: RateLimitedError): Refusal {
  return new Refusal(429, err.code, err.message, {
    reason: err.scope,
    headers: { "retry-after": String(err.retryAfterSec) },
    quiet: !err.first,
  });
}

/**
 * `ambit ca`: signs workload CSRs for authenticated node agents, over HTTPS with a serving certificate from the
 * same CA (renewed at half life). POST /v1/sign {csr, identity:{namespace, serviceAccount}, pod:{namespace, name}}
 * -> {certChain, trustBundle, expiresAt}; GET /v1/bundle -> {trustBundle}. Token reviews that reach the reviewer's
 * backend are charged to the caller's source address, certificate requests to the authenticated node: 429
 * rate_limited with Retry-After beyond either allowance (reason source_address or node). Every refusal answers
 * {code, reason?, message}: 401 (missing_token, invalid_token), 403 (pod_not_found, other_node,
 * identity_mismatch), 413, 429, 400 (bad_csr with the CsrRefusal, bad_request, bad_san, csr_signature,
 * csr_mismatch).
 */
export async function startCaServer(options: CaServerOptions): Promise<CaServer> {
  const { ca, reviewer, lookupPod } = options;
  const log = options.logger ?? silentLogger;
  const addressLimiter = new KeyedRateLimiter("source_address", options.rateLimit);
  const nodeLimiter = new KeyedRateLimiter("node", options.nodeRateLimit);
  const unauthenticated = new LogThrottle();
  const names = options.servingNames ?? { dnsNames: ["localhost"], ips: ["127.0.0.1"] };

  async function servingCredentials() {
    const keys = await generateRsaKeyPair();
    const issued = ca.issueServingCertificate(keys, names);
    return { key: keys.privateKeyPem, cert: issued.certChainPem, notAfter: issued.notAfter };
  }

  async function sign(req: IncomingMessage, res: ServerResponse, ctx: Record<string, unknown>): Promise<void> {
    const token = bearerToken(req);
    if (!token) throw new Refusal(401, "unauthenticated", "missing bearer token", { reason: "missing_token" });
    const address = req.socket.remoteAddress ?? "unknown";
    let caller: Awaited<ReturnType<TokenReviewer["review"]>>;
    try {
      // Only a review that will reach the API server is charged to the source address: an agent whose token is
      // cached (or being reviewed already) is never throttled, however many pods it signs for at start-up, while
      // an address trying unknown tokens gets its burst and then the rate (DEFAULT_ADDRESS_RATE_LIMIT).
      caller = await reviewer.review(token, () => addressLimiter.take(address));
    } catch (err) {
      if (err instanceof RateLimitedError) throw rateLimited(err);
      if (err instanceof IdentityError && err.code === "token_review_busy") {
        throw new Refusal(503, err.code, "too many token reviews pending, retry shortly", {
          detail: err.message,
          headers: { "retry-after": "1" },
        });
      }
      const code = err instanceof IdentityError ? err.code : "token_review_failed";
      log.error({ ...ctx, err }, "token review failed; refusing the request, the agent will retry");
      throw new Refusal(503, code, "cannot review the token right now");
    }
    if (!caller) {
      throw new Refusal(401, "unauthenticated", "token is not valid for the CA", { reason: "invalid_token" });
    }
    ctx.node = caller.nodeName;
    // Charged before the body is even read: every request past authentication may cost a signature.
    try {
      nodeLimiter.take(caller.nodeName);
    } catch (err) {
      if (err instanceof RateLimitedError) throw rateLimited(err);
      throw err;
    }

    let body: unknown;
    try {
      body = JSON.parse(await readBody(req));
    } catch (err) {
      if (err instanceof BodyTooLargeError) throw new Refusal(413, "body_too_large", err.message);
      throw new Refusal(400, "bad_request", "body is not JSON");
    }
    if (!isSignBody(body)) {
      throw new Refusal(
        400,
        "bad_request",
        "expected {csr, identity:{namespace, serviceAccount}, pod:{namespace, name}}",
      );
    }
    ctx.pod = `${body.pod.namespace}/${body.pod.name}`;
    const identity: SpiffeId = { trustDomain: ca.trustDomain, ...body.identity };
    try {
      ctx.identity = formatSpiffeId(identity);
    } catch (err) {
      throw new Refusal(400, "bad_san", (err as Error).message);
    }
    const decision = authorizeSign({
      callerNode: caller.nodeName,
      podRef: body.pod,
      pod: lookupPod(body.pod.namespace, body.pod.name),
      identity,
    });
    if (!decision.ok) throw new Refusal(403, "forbidden", decision.message, { reason: decision.reason });
    let issued: ReturnType<MeshCa["signCsr"]>;
    try {
      issued = ca.signCsr(body.csr, identity);
    } catch (err) {
      if (err instanceof CsrError) throw new Refusal(400, err.code, err.message, { reason: err.reason });
      if (err instanceof IdentityError && CSR_CODES.has(err.code)) throw new Refusal(400, err.code, err.message);
      throw err;
    }
    log.info({ ...ctx, notAfter: issued.notAfter }, "issued workload certificate");
    sendJson(res, 200, {
      certChain: issued.certChainPem,
      trustBundle: issued.trustBundlePem,
      expiresAt: issued.notAfter.toISOString(),
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "").split("?")[0] ?? "";
    // The path is the caller's text (up to the header limit): only the CA's own endpoints are logged by name.
    const logged = ENDPOINTS.has(path) ? path : "other";
    const ctx: Record<string, unknown> = { method: req.method, path: logged, from: req.socket.remoteAddress };
    try {
      if (path === "/v1/sign" && req.method === "POST") return await sign(req, res, ctx);
      if (path === "/v1/bundle" && req.method === "GET") {
        return sendJson(res, 200, { trustBundle: ca.trustBundlePem() });
      }
      throw new Refusal(ENDPOINTS.has(path) ? 405 : 404, "not_found", "no such endpoint");
    } catch (err) {
      if (err instanceof Refusal) {
        const { reason, detail } = err.details;
        const line = { ...ctx, status: err.status, code: err.code, reason, message: err.message, detail };
        if (err.details.quiet) log.debug(line, "CA request refused");
        else if (!ANYONE.has(err.status)) log.warn(line, "CA request refused");
        else {
          // Anyone can send these without a token: one line per kind an interval, with the count it stands for.
          unauthenticated.hit(`${err.status}|${err.code}|${reason}|${logged}`, (suppressed) =>
            log.warn({ ...line, suppressed }, "CA request refused"),
          );
        }
        const body = { code: err.code, ...(reason ? { reason } : {}), message: err.message };
        if (!res.headersSent) sendJson(res, err.status, body, err.details.headers);
        return;
      }
      log.error({ ...ctx, err }, "CA request failed");
      if (!res.headersSent) sendJson(res, 500, { code: "internal", message: "internal error" });
    }
  }

  let creds = await servingCredentials();
  const server: Server = createServer({ key: creds.key, cert: creds.cert }, (req, res) => void handle(req, res));
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;

  let renewTimer: NodeJS.Timeout | undefined;
  const scheduleRenewal = () => {
    renewTimer = setTimeout(
      async () => {
        try {
          creds = await servingCredentials();
          server.setSecureContext({ key: creds.key, cert: creds.cert });
          log.info({ notAfter: creds.notAfter }, "CA serving certificate renewed");
        } catch (err) {
          log.error({ err }, "CA serving certificate renewal failed; retrying at the next half-life");
        }
        scheduleRenewal();
      },
      refreshDelayMs(Date.now(), creds.notAfter.getTime()),
    ).unref();
  };
  scheduleRenewal();

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, options.host ?? "0.0.0.0", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const host = options.host && options.host !== "0.0.0.0" ? options.host : "127.0.0.1";
  log.info({ port, trustDomain: ca.trustDomain }, "mesh CA server listening");
  return {
    url: `https://${host.includes(":") ? `[${host}]` : host}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        clearTimeout(renewTimer);
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
