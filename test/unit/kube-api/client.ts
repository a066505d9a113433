import type { IncomingHttpHeaders, IncomingMessage } from "node:http";
import { request } from "node:https";
import type { KubeApiServer } from "../../kube-api/server.js";

/** A plain node:https client for the test API server's tests: what any real client does on the wire. */

/** Parsed JSON from the server under test, read freely by assertions (which are what check its shape). */
// biome-ignore lint/suspicious/noExplicitAny: test assertions walk arbitrary API JSON; a wrong path fails the test
export type Json = any;

export interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Json;
}

export function call(
  server: KubeApiServer,
  path: string,
  opts: { method?: string; token?: string | null; body?: unknown; contentType?: string } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { accept: "application/json" };
    const token = opts.token === undefined ? server.token : opts.token;
    if (token !== null) headers.authorization = `Bearer ${token}`;
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    if (payload !== undefined) headers["content-type"] = opts.contentType ?? "application/json";
    const req = request(
      `${server.url}${path}`,
      { method: opts.method ?? "GET", ca: server.caPem, headers, agent: false, timeout: 10_000 },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => {
          text += d;
        });
        res.on("end", () => {
          let body: unknown = text;
          try {
            body = JSON.parse(text);
          } catch {
            // not JSON (healthz): keep the text
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
        });
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer to ${path} within 10 s`)));
    req.on("error", reject);
    req.end(payload);
  });
}

export interface WatchEvent {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: Json;
}

/** How a watch response ended: cleanly (final chunk seen) or not. */
export interface WatchEnd {
  complete: boolean;
}

/** One watch request; events are parsed from the newline-delimited JSON stream as they arrive. */
export class Watch {
  readonly events: WatchEvent[] = [];
  /** Resolves with the response headers' status once they arrive. */
  readonly response: Promise<IncomingMessage>;
  /** Resolves when the stream is over, however it ended. */
  readonly ended: Promise<WatchEnd>;
  #waiters: Array<() => void> = [];
  #buffer = "";
  #destroy: () => void = () => {};

  constructor(server: KubeApiServer, path: string, token: string = server.token) {
    let settleEnd: (e: WatchEnd) => void = () => {};
    this.ended = new Promise((r) => {
      settleEnd = r;
    });
    this.response = new Promise((resolve, reject) => {
      const req = request(`${server.url}${path}`, {
        ca: server.caPem,
        headers: { authorization: `Bearer ${token}`, accept: "application/json" },
        agent: false,
      });
      this.#destroy = () => req.destroy();
      req.on("response", (res) => {
        resolve(res);
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => this.#feed(chunk));
        let done = false;
        const end = (complete: boolean) => {
          if (done) return;
          done = true;
          settleEnd({ complete });
          this.#wake();
        };
        res.on("end", () => end(res.complete));
        res.on("error", () => end(false));
        res.on("close", () => end(res.complete));
      });
      req.on("error", (err) => {
        reject(err);
        settleEnd({ complete: false });
        this.#wake();
      });
      req.end();
    });
    this.response.catch(() => {});
  }

  /** Waits until `n` events have arrived (in total), failing after `ms`. */
  async waitFor(n: number, ms = 5000): Promise<WatchEvent[]> {
    return this.waitUntil((events) => events.length >= n, `${n} events`, ms);
  }

  async waitUntil(check: (events: WatchEvent[]) => boolean, what: string, ms = 5000): Promise<WatchEvent[]> {
    const deadline = Date.now() + ms;
    let over = false;
    void this.ended.then(() => {
      over = true;
    });
    while (!check(this.events)) {
      const left = deadline - Date.now();
      if (left <= 0 || over) {
        await new Promise((r) => setImmediate(r));
        if (check(this.events)) break;
        throw new Error(
          `watch: no ${what} (got ${JSON.stringify(this.events.map((e) => e.type))}${over ? ", stream ended" : ""})`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 200));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.events;
  }

  /** How the stream ended, failing if it is still open after `ms`. */
  async end(ms = 5000): Promise<WatchEnd> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`watch still open after ${ms} ms`)), ms);
    });
    try {
      return await Promise.race([this.ended, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    this.#destroy();
  }

  #feed(chunk: string): void {
    this.#buffer += chunk;
    let nl = this.#buffer.indexOf("\n");
    while (nl >= 0) {
      const line = this.#buffer.slice(0, nl);
      this.#buffer = this.#buffer.slice(nl + 1);
      if (line.trim()) this.events.push(JSON.parse(line) as WatchEvent);
      nl = this.#buffer.indexOf("\n");
    }
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}

/** Events other than bookmarks, as `TYPE name` strings: the shape most assertions want. */
export function changes(events: WatchEvent[]): string[] {
  return events.filter((e) => e.type !== "BOOKMARK").map((e) => `${e.type} ${e.object?.metadata?.name ?? ""}`);
}
