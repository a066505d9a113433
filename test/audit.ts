/**
 * `make test`'s supply-chain gate: `npm audit --omit=dev` must report no high or critical advisory against what
 * ambit ships. A registry that cannot be asked (offline, a mirror without the audit endpoint: this repository's
 * own build machine answers 405) skips the check with one line, so a network outage never fails the suite; anything
 * else npm cannot do fails it. Exit status: 0 passed or skipped, 1 failed.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { repositoryRoot } from "./support/repository.js";

/** npm gives up on the registry after this; the whole run after AUDIT_TIMEOUT_MS (then: skipped, no answer). */
const FETCH_TIMEOUT_MS = 20_000;
const AUDIT_TIMEOUT_MS = 60_000;
const BLOCKING = ["critical", "high"] as const;
const SEVERITIES = ["critical", "high", "moderate", "low", "info"] as const;
// What npm says when it could not reach the registry or the registry would not answer the audit request.
const UNREACHABLE_CODES = new Set([
  "ENOTFOUND",
  "EAI_AGAIN",
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
]);
const AUDIT_ENDPOINT = "/-/npm/v1/security/";

export interface Verdict {
  result: "passed" | "failed" | "skipped";
  lines: string[];
}

interface Advisory {
  title?: string;
  url?: string;
  severity?: string;
}

interface Vulnerability {
  name?: string;
  severity?: string;
  via?: Array<Advisory | string>;
  fixAvailable?: unknown;
}

interface AuditJson {
  metadata?: { vulnerabilities?: Partial<Record<(typeof SEVERITIES)[number], number>> };
  vulnerabilities?: Record<string, Vulnerability>;
  message?: string;
  error?: { code?: string; summary?: string };
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim().slice(0, 300);
}

/** What `npm audit --json` printed (its exit status says nothing more: 1 for any advisory and for any error). */
export function auditVerdict(stdout: string): Verdict {
  let report: AuditJson;
  try {
    report = JSON.parse(stdout) as AuditJson;
  } catch {
    return { result: "failed", lines: [`npm audit printed no JSON: ${oneLine(stdout) || "(nothing)"}`] };
  }
  const counts = report.metadata?.vulnerabilities;
  if (counts) {
    const summary = SEVERITIES.map((s) => `${counts[s] ?? 0} ${s}`).join(", ");
    const blocking = Object.values(report.vulnerabilities ?? {}).filter((v) =>
      (BLOCKING as readonly string[]).includes(v.severity ?? ""),
    );
    if (blocking.length === 0 && BLOCKING.every((s) => !counts[s])) {
      return { result: "passed", lines: [`npm audit --omit=dev: no high or critical advisory (${summary})`] };
    }
    const lines = [`npm audit --omit=dev: ${summary}; high and critical fail the build:`];
    for (const v of blocking) {
      const advisories = (v.via ?? []).map((a) => (typeof a === "string" ? `via ${a}` : `${a.title} ${a.url}`));
      const fix = v.fixAvailable ? "a fix is available (npm audit fix)" : "no fix available";
      lines.push(`  ${v.severity} ${v.name}: ${advisories.join("; ")}; ${fix}`);
    }
    return { result: "failed", lines };
  }
  const message = report.message ?? report.error?.summary ?? "";
  const code = report.error?.code ?? /\b(E[A-Z]+)\b/.exec(message)?.[1] ?? "";
  if (message.includes(AUDIT_ENDPOINT) || UNREACHABLE_CODES.has(code)) {
    return {
      result: "skipped",
      lines: [`npm audit skipped: the registry's audit endpoint did not answer (${oneLine(message)})`],
    };
  }
  return { result: "failed", lines: [`npm audit could not run: ${oneLine(message || stdout)}`] };
}

/** Runs the audit in `cwd` against the configured registry (npm_config_registry and .npmrc apply). */
export function runAudit(cwd: string): Promise<Verdict> {
  const args = ["audit", "--omit=dev", "--json", "--fetch-retries=0", `--fetch-timeout=${FETCH_TIMEOUT_MS}`];
  return new Promise((resolve) => {
    execFile("npm", args, { cwd, timeout: AUDIT_TIMEOUT_MS, maxBuffer: 32 * 1024 * 1024 }, (err, stdout) => {
      if (err && (err as { killed?: boolean }).killed) {
        resolve({ result: "skipped", lines: [`npm audit skipped: no answer within ${AUDIT_TIMEOUT_MS / 1000} s`] });
        return;
      }
      if (err && (err as NodeJS.ErrnoException).code === "ENOENT") {
        resolve({ result: "failed", lines: ["npm audit could not run: npm is not installed"] });
        return;
      }
      resolve(auditVerdict(stdout));
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const verdict = await runAudit(repositoryRoot(import.meta.url));
  for (const line of verdict.lines) (verdict.result === "failed" ? process.stderr : process.stdout).write(`${line}\n`);
  process.exitCode = verdict.result === "failed" ? 1 : 0;
}
