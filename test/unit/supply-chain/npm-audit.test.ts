import { execFile } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import test from "ava";
import { repositoryRoot } from "../../support/repository.js";

const ROOT = repositoryRoot(import.meta.url);
const SCRIPT = join(ROOT, "dist", "test", "audit.js");

/** A registry whose audit endpoint answers `advisories` (package -> advisories) or `status`; nothing else exists. */
async function registry(
  t: import("ava").ExecutionContext,
  answer: { status: number } | { advisories: Record<string, unknown[]> },
): Promise<string> {
  const asked: string[] = [];
  const server: Server = createServer((req, res) => {
    asked.push(`${req.method} ${req.url}`);
    req.resume();
    if (req.method === "POST" && req.url === "/-/npm/v1/security/advisories/bulk") {
      if ("status" in answer) {
        res.writeHead(answer.status, { allow: "GET,HEAD" }).end();
        return;
      }
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer.advisories));
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
}

const advisory = (id: number, severity: string) => ({
  id,
  url: `https://example.invalid/advisories/${id}`,
  title: `test advisory ${id}`,
  severity,
  vulnerable_versions: "<999.0.0",
  cwe: [],
  cvss: { score: 0, vectorString: null },
});

/** `make test`'s audit step against `registryUrl`: its exit status and everything it printed. */
function audit(registryUrl: string): Promise<{ status: number; output: string }> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, npm_config_registry: registryUrl };
    execFile(process.execPath, [SCRIPT], { cwd: ROOT, env, timeout: 90_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") return reject(err);
      resolve({ status: typeof err?.code === "number" ? err.code : 0, output: stdout + stderr });
    });
  });
}

test("a high or critical advisory against a production dependency fails make test, naming it", async (t) => {
  const url = await registry(t, {
    advisories: { "node-forge": [advisory(1, "critical")], pino: [advisory(2, "high")] },
  });
  const { status, output } = await audit(url);
  t.is(status, 1, output);
  t.regex(output, /1 critical, 1 high/);
  t.regex(output, /critical node-forge: test advisory 1 https:\/\/example\.invalid\/advisories\/1/);
  t.regex(output, /high pino: test advisory 2/);
});

test("moderate and low advisories are reported but pass", async (t) => {
  const url = await registry(t, { advisories: { yaml: [advisory(3, "moderate")], pino: [advisory(4, "low")] } });
  const lower = await audit(url);
  t.is(lower.status, 0, lower.output);
  t.regex(lower.output, /no high or critical advisory \(0 critical, 0 high, 1 moderate, 1 low, 0 info\)/);
});

test("a registry that cannot be asked skips the audit with one line: no audit endpoint (405), nothing listening", async (t) => {
  const mirror = await audit(await registry(t, { status: 405 }));
  t.is(mirror.status, 0, mirror.output);
  t.regex(mirror.output, /^npm audit skipped: .*405 Method Not Allowed.*\n$/);
  // A port nothing listens on: a server opened and closed again.
  const gone = createServer();
  await new Promise<void>((resolve) => gone.listen(0, "127.0.0.1", resolve));
  const port = (gone.address() as AddressInfo).port;
  await new Promise<void>((resolve) => gone.close(() => resolve()));
  const offline = await audit(`http://127.0.0.1:${port}/`);
  t.is(offline.status, 0, offline.output);
  t.regex(offline.output, /^npm audit skipped: .*ECONNREFUSED.*\n$/);
});
