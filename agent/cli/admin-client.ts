/** Reads a running agent's admin server (GET, JSON) for the operator commands. */
import http from "node:http";
import { AmbitError } from "../errors.js";
import { parseHostPort } from "../node/config.js";

export class AdminRequestError extends AmbitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("admin_unavailable", message, options);
  }
}

export const DEFAULT_ADMIN = "127.0.0.1:15000";

export function getAdminJson<T>(admin: string, path: string, timeoutMs = 5000): Promise<T> {
  const { host, port } = parseHostPort(admin, "admin");
  const url = `http://${admin}${path}`;
  return new Promise<T>((resolve, reject) => {
    const req = http.get({ host, port, path, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", (cause) => reject(new AdminRequestError(`reading ${url} failed`, { cause })));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString();
        if (res.statusCode !== 200) {
          return reject(new AdminRequestError(`${url} answered HTTP ${res.statusCode}: ${text.slice(0, 200)}`));
        }
        try {
          resolve(JSON.parse(text) as T);
        } catch (cause) {
          reject(new AdminRequestError(`${url} did not answer JSON`, { cause }));
        }
      });
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", (cause) =>
      reject(
        new AdminRequestError(`cannot reach the agent's admin server at ${admin} (is the agent running?)`, { cause }),
      ),
    );
  });
}
