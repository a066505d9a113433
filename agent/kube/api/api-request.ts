import type { IncomingMessage } from "node:http";
import { type Agent, request } from "node:https";
import { parseRetryAfter } from "./backoff.js";
import type { ApiRequestConfig } from "./config.js";
import { KubeApiError } from "./errors.js";
import { parseStatus } from "./watch-event.js";

/**
 * One GET to the API server on node:https, with the configuration re-applied (fresh token) and every wait bounded:
 * a whole JSON answer (a list page) within its time limit, or a stream's headers within theirs. Failures are
 * KubeApiErrors: unreachable, timeout, http_status (with the Status reason and Retry-After), bad_response, closed.
 */

export interface RequestContext {
  config: ApiRequestConfig;
  agent: Agent;
  /** Aborts the request (close()). */
  signal: AbortSignal;
}

/** Error answers are Status objects of a few hundred bytes; more is not read. */
const MAX_ERROR_BODY = 64 * 1024;

const USER_AGENT = "ambit-agent (list-watch; node:https)";

function wrapNetworkError(err: unknown, signal: AbortSignal): KubeApiError {
  if (err instanceof KubeApiError) return err;
  if (signal.aborted) return new KubeApiError("closed", "request aborted: the source is closing", { cause: err });
  return new KubeApiError("unreachable", (err as Error)?.message ?? String(err), { cause: err });
}

/**
 * Sends the GET and lets `handle` consume the response (any status). `timeoutMs` bounds everything up to the end
 * of `handle`: connection, TLS, headers and what `handle` reads; past it the request is destroyed.
 */
async function exchange<T>(
  ctx: RequestContext,
  path: string,
  timeoutMs: number,
  handle: (res: IncomingMessage) => Promise<T>,
): Promise<T> {
  if (ctx.signal.aborted) throw new KubeApiError("closed", "request not sent: the source is closing");
  const options = await ctx.config.requestOptions();
  const url = new URL(`${options.server}${path}`);
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    let timedOut: KubeApiError | undefined;
    const req = request(url, {
      method: "GET",
      agent: ctx.agent,
      signal: ctx.signal,
      headers: { ...options.headers, accept: "application/json", "user-agent": USER_AGENT },
      ...options.tls,
      ...(options.auth === undefined ? {} : { auth: options.auth }),
    });
    const finish = (err: unknown, value?: T) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err === undefined) resolve(value as T);
      else reject(timedOut ?? wrapNetworkError(err, ctx.signal));
    };
    const timer = setTimeout(() => {
      timedOut = new KubeApiError("timeout", `GET ${url.pathname}: no answer from ${url.host} within ${timeoutMs} ms`);
      req.destroy(timedOut);
    }, timeoutMs);
    req.on("response", (res) => {
      handle(res).then(
        (value) => finish(undefined, value),
        (err: unknown) => finish(err ?? new Error("failed")),
      );
    });
    req.on("error", (err) => finish(err));
    req.end();
  });
}

/** Reads a whole body, failing past `maxBytes` or if the connection breaks before its end. */
function readBody(res: IncomingMessage, maxBytes: number, signal: AbortSignal): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const fail = (err: KubeApiError) => {
      if (done) return;
      done = true;
      res.destroy();
      reject(err);
    };
    res.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) fail(new KubeApiError("bad_response", `answer larger than ${maxBytes} bytes`));
      else chunks.push(chunk);
    });
    res.on("end", () => {
      if (done) return;
      done = true;
      resolve(Buffer.concat(chunks));
    });
    res.on("error", (err) => fail(wrapNetworkError(err, signal)));
    res.on("close", () => {
      if (!res.complete) fail(wrapNetworkError(new Error("connection closed before the end of the answer"), signal));
    });
  });
}

/** The failure a non-200 answer means, from its Status body and Retry-After. */
async function failureOf(res: IncomingMessage, signal: AbortSignal, maxRetryAfterMs: number): Promise<KubeApiError> {
  const code = res.statusCode ?? 0;
  let body: unknown;
  try {
    body = JSON.parse((await readBody(res, MAX_ERROR_BODY, signal)).toString("utf8"));
  } catch {
    // A proxy's HTML error page or a cut-off body: the status code alone says enough.
  }
  const status = parseStatus(body);
  const fromHeader = parseRetryAfter(res.headers["retry-after"], maxRetryAfterMs);
  const fromStatus =
    status.retryAfterSeconds === undefined ? undefined : Math.min(maxRetryAfterMs, status.retryAfterSeconds * 1000);
  const reason = status.reason || res.statusMessage || "";
  return new KubeApiError("http_status", `HTTP ${code} ${reason}${status.message ? `: ${status.message}` : ""}`, {
    httpStatus: code,
    reason,
    retryAfterMs: fromHeader ?? fromStatus,
  });
}

export interface JsonGetOptions {
  /** For the whole exchange: connection, headers and body. */
  timeoutMs: number;
  maxBytes: number;
  maxRetryAfterMs: number;
}

/** GET with a JSON answer (a list page); a non-200 answer rejects with its Status. */
export async function getJson(ctx: RequestContext, path: string, opts: JsonGetOptions): Promise<unknown> {
  const body = await exchange(ctx, path, opts.timeoutMs, async (res) => {
    if (res.statusCode !== 200) throw await failureOf(res, ctx.signal, opts.maxRetryAfterMs);
    return readBody(res, opts.maxBytes, ctx.signal);
  });
  try {
    return JSON.parse(body.toString("utf8"));
  } catch (cause) {
    throw new KubeApiError("bad_response", `GET ${path.split("?")[0]}: answer is not JSON`, { cause });
  }
}

/**
 * GET of a stream (a watch): resolves with the 200 response once its headers are in (from then on the caller
 * bounds it); otherwise rejects, with the Status of a non-200 answer.
 */
export function openStream(
  ctx: RequestContext,
  path: string,
  opts: { headersTimeoutMs: number; maxRetryAfterMs: number },
): Promise<IncomingMessage> {
  return exchange(ctx, path, opts.headersTimeoutMs, async (res) => {
    if (res.statusCode !== 200) throw await failureOf(res, ctx.signal, opts.maxRetryAfterMs);
    return res;
  });
}
