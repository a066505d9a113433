/**
 * A real Prometheus for tests: started on 127.0.0.1 with a free port, a temporary config and TSDB directory,
 * scraping the given targets every second; killed and its directory removed when the test ends, pass or fail.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ExecutionContext } from "ava";

export const PROMETHEUS_BIN = process.env.AMBIT_PROMETHEUS ?? "/usr/bin/prometheus";

export interface TestPrometheus {
  url: string;
  /** Instant query; the result vector (empty when nothing matches). */
  query(promql: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>>;
  /** Poll `query` until it returns at least one sample, or fail after `timeoutMs`. */
  waitFor(
    promql: string,
    timeoutMs?: number,
  ): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export async function prometheusFor(t: ExecutionContext, targets: string[]): Promise<TestPrometheus> {
  const dir = mkdtempSync(join(tmpdir(), "ambit-prom-"));
  let child: ChildProcess | undefined;
  t.teardown(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child?.once("exit", r));
      child.kill("SIGKILL");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });
  const config = [
    "global:",
    "  scrape_interval: 1s",
    "  scrape_timeout: 1s",
    "scrape_configs:",
    "  - job_name: ambit",
    "    metrics_path: /metrics",
    "    static_configs:",
    `      - targets: [${targets.map((a) => JSON.stringify(a)).join(", ")}]`,
    "",
  ].join("\n");
  writeFileSync(join(dir, "prometheus.yml"), config);
  const port = await freePort();
  const stderr: string[] = [];
  child = spawn(
    PROMETHEUS_BIN,
    [
      `--config.file=${join(dir, "prometheus.yml")}`,
      `--storage.tsdb.path=${join(dir, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=warn",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  child.stderr?.on("data", (c: Buffer) => stderr.push(c.toString()));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`prometheus exited: ${stderr.join("").slice(-2000)}`);
    const ok = await fetch(`${url}/-/ready`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`prometheus not ready after 20s: ${stderr.join("").slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const query: TestPrometheus["query"] = async (promql) => {
    const res = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(promql)}`);
    const body = (await res.json()) as { status: string; error?: string; data?: { result: never[] } };
    if (body.status !== "success") throw new Error(`query ${promql} failed: ${body.error}`);
    return body.data?.result ?? [];
  };
  return {
    url,
    query,
    waitFor: async (promql, timeoutMs = 20_000) => {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const result = await query(promql);
        if (result.length > 0) return result;
        if (Date.now() > end) throw new Error(`no result for ${promql} within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 500));
      }
    },
  };
}
