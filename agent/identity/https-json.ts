import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import { type RequestOptions, request } from "node:https";

/** JSON over HTTPS, the small subset the CA, its client and the TokenReview client need. */

export interface JsonResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: unknown;
}

export const MAX_JSON_BYTES = 64 * 1024;

export class BodyTooLargeError extends Error {}

/** Reads a request or response body, failing (and discarding the rest) once it exceeds `limit` bytes. */
export function readBody(stream: IncomingMessage, limit = MAX_JSON_BYTES): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        stream.removeAllListeners("data");
        stream.resume();
        reject(new BodyTooLargeError(`body exceeds ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    stream.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    stream.on("error", reject);
  });
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/**
 * One HTTPS request with a JSON body and a JSON answer. `ca` is the only trust (no system roots), the TLS server
 * name is verified by Node as usual. Network failures, timeouts and non-JSON answers reject with the raw error.
 */
export function requestJson(
  url: string,
  opts: {
    method: "GET" | "POST";
    ca?: string | Buffer | Array<string | Buffer>;
    /** More TLS options (a client certificate, a server name) from a kubeconfig. */
    tls?: Pick<RequestOptions, "cert" | "key" | "pfx" | "passphrase" | "servername" | "rejectUnauthorized">;
    body?: unknown;
    headers?: Record<string, string>;
    timeoutMs: number;
  },
): Promise<JsonResponse> {
  return new Promise((resolve, reject) => {
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const headers: Record<string, string | number> = { accept: "application/json", ...opts.headers };
    if (payload !== undefined) {
      headers["content-type"] = "application/json";
      headers["content-length"] = Buffer.byteLength(payload);
    }
    const options: RequestOptions = { ...opts.tls, method: opts.method, headers, timeout: opts.timeoutMs };
    if (opts.ca !== undefined) options.ca = opts.ca;
    const req = request(url, options, (res) => {
      readBody(res, MAX_JSON_BYTES * 4).then((text) => {
        try {
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text ? JSON.parse(text) : undefined });
        } catch (err) {
          reject(new Error(`HTTP ${res.statusCode} answer from ${url} is not JSON`, { cause: err }));
        }
      }, reject);
    });
    req.on("timeout", () => req.destroy(new Error(`no answer from ${url} within ${opts.timeoutMs} ms`)));
    req.on("error", reject);
    req.end(payload);
  });
}
