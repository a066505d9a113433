/** Runs the public load tools (iperf3, wrk, openssl) inside simulated pods and parses what they print. */
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { SimCluster } from "../../agent/sim/index.js";

const execFileP = promisify(execFile);
const PROBE = fileURLToPath(new URL("./connect-probe.js", import.meta.url));

/** One HTTP GET from inside `netns` (connect-probe.js get): the response body as the probe prints it. */
export async function probeGet(cluster: SimCluster, netns: string, host: string, port: number, path: string) {
  const { stdout } = await cluster.exec(netns, process.execPath, [PROBE, "get", host, String(port), path], {
    timeoutMs: 10_000,
  });
  return stdout;
}

export interface WrkResult {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  /** Socket errors and non-2xx responses wrk reported, as printed; empty when there were none. */
  errors: string;
}

/** wrk prints durations as 812.00us, 1.23ms, 2.01s or 1.50m. */
function durationMs(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text.trim());
  if (!m) return Number.NaN;
  const v = Number(m[1]);
  return m[2] === "us" ? v / 1000 : m[2] === "ms" ? v : m[2] === "s" ? v * 1000 : v * 60_000;
}

export function parseWrk(out: string): WrkResult {
  const pct = (p: string) => durationMs(new RegExp(`^\\s*${p}%\\s+(\\S+)`, "m").exec(out)?.[1] ?? "");
  const errors = [/Socket errors:[^\n]*/.exec(out)?.[0], /Non-2xx or 3xx responses:[^\n]*/.exec(out)?.[0]].filter(
    (e): e is string => e !== undefined,
  );
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? Number.NaN),
    p50Ms: pct("50"),
    p99Ms: pct("99"),
    requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? Number.NaN),
    errors: errors.join("; "),
  };
}

export async function wrk(
  cluster: SimCluster,
  netns: string,
  url: string,
  opts: { seconds: number; close?: boolean },
): Promise<WrkResult> {
  const args = ["-c16", "-t2", `-d${opts.seconds}s`, "--latency"];
  if (opts.close) args.push("-H", "Connection: close");
  const { stdout } = await cluster.exec(netns, "wrk", [...args, url], { timeoutMs: (opts.seconds + 30) * 1000 });
  const r = parseWrk(stdout);
  if (!Number.isFinite(r.rps)) throw new Error(`cannot parse wrk output:\n${stdout}`);
  return r;
}

/** Single-stream iperf3 throughput in Gbit/s (receiver side). */
export async function iperf3(cluster: SimCluster, netns: string, host: string, port: number, seconds: number) {
  const { stdout } = await cluster.exec(
    netns,
    "iperf3",
    ["-c", host, "-p", String(port), "-t", String(seconds), "-J"],
    {
      timeoutMs: (seconds + 30) * 1000,
    },
  );
  const doc = JSON.parse(stdout) as { error?: string; end?: { sum_received?: { bits_per_second?: number } } };
  const bps = doc.end?.sum_received?.bits_per_second;
  if (doc.error || bps === undefined) throw new Error(`iperf3 to ${host}:${port} failed: ${doc.error ?? stdout}`);
  return bps / 1e9;
}

/** A throwaway PKI for the nginx tunnel: a root and two leaf certificates with SPIFFE URI SANs, made by openssl. */
export async function makeTestPki(dir: string): Promise<void> {
  const openssl = (...args: string[]) => execFileP("openssl", args, { cwd: dir });
  await openssl("genrsa", "-out", "ca.key", "2048");
  await openssl(
    "req",
    "-x509",
    "-new",
    "-key",
    "ca.key",
    "-subj",
    "/O=ambit-bench-root",
    "-days",
    "2",
    "-out",
    "ca.crt",
  );
  for (const w of ["client", "server"]) {
    await openssl("genrsa", "-out", `${w}.key`, "2048");
    await openssl("req", "-new", "-key", `${w}.key`, "-subj", `/O=ambit-bench/CN=${w}`, "-out", `${w}.csr`);
    const ext = join(dir, `${w}.ext`);
    writeFileSync(
      ext,
      `subjectAltName=URI:spiffe://cluster.local/ns/default/sa/${w},DNS:${w}\nextendedKeyUsage=serverAuth,clientAuth\n`,
    );
    await openssl(
      "x509",
      "-req",
      "-in",
      `${w}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-days",
      "1",
      "-extfile",
      ext,
      "-out",
      `${w}.crt`,
    );
  }
}

/**
 * An nginx configuration serving HTTP for a bench, run in the foreground with its files under `dir`: one worker,
 * keep-alive without limits, no access log, and `server` (the bench's own server block) inside `http`.
 */
export function nginxHttpConfig(dir: string, server: string): string {
  return `daemon off; worker_processes 1; pid ${dir}/nginx.pid; error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 10000000; keepalive_timeout 60s;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  ${server}
}
`;
}

/** HOST:PORT from a bench script's command line (the last colon splits, so an IPv6 host may carry colons). */
export function parseEndpoint(text: string): { address: string; port: number } {
  const at = text.lastIndexOf(":");
  const port = Number(text.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port)) throw new Error(`not HOST:PORT: ${text}`);
  return { address: text.slice(0, at), port };
}

/** nginx answering `ok` to GET / on 127.0.0.1:`port`: the backend the relay benches put a relay in front of. */
export function nginxOkConfig(dir: string, port: number): string {
  return nginxHttpConfig(
    dir,
    `server { listen 127.0.0.1:${port} backlog=4096; location = / { default_type text/plain; return 200 "ok"; } }`,
  );
}
