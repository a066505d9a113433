/** A tiny GET-only HTTP server for the agent's metrics, admin and readiness ports. */
import http from "node:http";
import { AmbitError } from "../errors.js";
import { parseHostPort } from "../node/config.js";

export class HttpServeError extends AmbitError {
  constructor(what: string, address: string, cause: unknown) {
    super("listen_failed", `cannot serve ${what} on ${address}`, { cause });
  }
}

export interface Reply {
  status: number;
  body: string;
  contentType?: string;
}

/** A route's handler; `query` is the request's query string (most routes take none). */
export type Route = (query: URLSearchParams) => Reply | Promise<Reply>;

export interface ServingEndpoint {
  /** The bound address, host:port (the real port when configured with :0). */
  address: string;
  close(): Promise<void>;
}

export const json = (status: number, value: unknown): Reply => ({
  status,
  body: `${JSON.stringify(value, null, 2)}\n`,
  contentType: "application/json",
});

/** Serve `routes` (exact paths; the query goes to the route) on `address`; resolves once listening. */
export async function serveRoutes(
  what: string,
  address: string,
  routes: Record<string, Route>,
): Promise<ServingEndpoint> {
  const { host, port } = parseHostPort(address, what);
  const server = http.createServer((req, res) => {
    const url = req.url ?? "/";
    const mark = url.indexOf("?");
    const path = mark < 0 ? url : url.slice(0, mark);
    const query = new URLSearchParams(mark < 0 ? "" : url.slice(mark + 1));
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    const send = (r: Reply) => {
      res.writeHead(r.status, { "content-type": r.contentType ?? "text/plain; charset=utf-8" });
      res.end(r.body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return send({ status: 405, body: "GET only\n" });
    if (!route) return send({ status: 404, body: `no such path; try ${Object.keys(routes).join(" ")}\n` });
    Promise.resolve(query)
      .then(route)
      .then(send, (err: unknown) => send(json(500, { error: err instanceof Error ? err.message : String(err) })));
  });
  // Scrapes and probes are short; do not let a stuck client hold a socket for minutes.
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => reject(new HttpServeError(what, address, err)));
    server.listen({ host, port }, () => resolve());
  });
  const bound = server.address();
  const real = bound && typeof bound === "object" ? bound : { address: host, port };
  const hostText = real.address.includes(":") ? `[${real.address}]` : real.address;
  return {
    address: `${hostText}:${real.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
