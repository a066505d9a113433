/** A tiny GET-only HTTP server for the agent's metrics, admin and readiness ports. */
import http from "node:http";
import { AmbitError } from "../errors.js";
import type { Logger } from "../log.js";
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

export interface ServeOptions {
  /** A port in use (EADDRINUSE) is not an error: retry in the background (see waitForPort). */
  waitWhileBusy?: { logger: Logger; retryMs: number };
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
  options: ServeOptions = {},
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
  // Each attempt takes its listeners back: waitForPort may try many times.
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const failed = (err: Error) => {
        server.off("listening", listening);
        reject(new HttpServeError(what, address, err));
      };
      const listening = () => {
        server.off("error", failed);
        resolve();
      };
      server.once("error", failed);
      server.once("listening", listening);
      server.listen({ host, port });
    });
  const close = () =>
    new Promise<void>((resolve) => {
      if (!server.listening) return resolve();
      server.close(() => resolve());
      server.closeAllConnections();
    });
  try {
    await listen();
  } catch (err) {
    const busy = err instanceof HttpServeError && (err.cause as NodeJS.ErrnoException).code === "EADDRINUSE";
    if (!busy || !options.waitWhileBusy) throw err;
    return waitForPort(what, address, listen, close, options.waitWhileBusy);
  }
  const bound = server.address();
  const real = bound && typeof bound === "object" ? bound : { address: host, port };
  const hostText = real.address.includes(":") ? `[${real.address}]` : real.address;
  return { address: `${hostText}:${real.port}`, close };
}

/**
 * The port is another process's, the previous agent's during an upgrade (both are on the node's network): try again
 * every retryMs until it is free (that agent exits at the end of its drain) or this endpoint is closed. Meanwhile
 * the kubelet's probes do not depend on it (DaemonSet: exec probes on --probe-dir files).
 */
function waitForPort(
  what: string,
  address: string,
  listen: () => Promise<void>,
  close: () => Promise<void>,
  wait: NonNullable<ServeOptions["waitWhileBusy"]>,
): ServingEndpoint {
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  wait.logger.warn(
    { what, address },
    "port held by another process (the previous agent, during an upgrade); served here once it is free",
  );
  const attempt = () => {
    timer = undefined;
    listen().then(
      () => {
        if (closed) return void close();
        wait.logger.info({ what, address }, "port free again; serving");
      },
      () => {
        if (!closed) timer = setTimeout(attempt, wait.retryMs);
      },
    );
  };
  timer = setTimeout(attempt, wait.retryMs);
  return {
    address,
    close: () => {
      closed = true;
      if (timer) clearTimeout(timer);
      return close();
    },
  };
}
