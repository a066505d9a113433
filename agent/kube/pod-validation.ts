import { isIP } from "node:net";
import { AmbitError } from "../errors.js";
import { type ClusterState, type NamespaceSpec, type PeerAuthenticationMode, type PodSpec, podKey } from "./pod.js";

/**
 * Validation of a parsed pod file (`{ "namespaces": [...], "pods": [...] }`). Pure. A file of the wrong shape is
 * rejected as a whole (typed error); a bad pod or namespace entry is rejected alone, with a problem saying which one
 * and why, and the rest is kept. A pod whose namespace entry is invalid is rejected too: its enrollment and
 * PeerAuthentication mode depend on that entry, and guessing them could weaken a STRICT namespace.
 */

/** The pod file as a whole is unusable (not JSON, or not the expected shape). */
export class PodFileFormatError extends AmbitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("POD_FILE_INVALID", message, options);
  }
}

export interface PodProblem {
  kind: "pod" | "namespace";
  /** `namespace/name` for a pod, the name for a namespace, or `pods[i]` / `namespaces[i]` when it has none. */
  key: string;
  /** Position of the entry in its array. */
  index: number;
  message: string;
}

export interface ValidationResult {
  state: ClusterState;
  problems: PodProblem[];
}

const PA_MODES: readonly PeerAuthenticationMode[] = ["PERMISSIVE", "STRICT", "DISABLE"];

/** Parses and validates pod-file text. Throws PodFileFormatError if it is not JSON or not the right shape. */
export function parsePodFile(text: string): ValidationResult {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new PodFileFormatError(`pod file is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  return validateClusterState(raw);
}

/** Validates an already-parsed pod file. Throws PodFileFormatError if it is not the right shape. */
export function validateClusterState(raw: unknown): ValidationResult {
  if (!isRecord(raw)) throw new PodFileFormatError(`pod file must be a JSON object, got ${describe(raw)}`);
  const rawNamespaces = raw.namespaces ?? [];
  if (!Array.isArray(rawNamespaces)) {
    throw new PodFileFormatError(`pod file "namespaces" must be an array, got ${describe(rawNamespaces)}`);
  }
  if (!Array.isArray(raw.pods))
    throw new PodFileFormatError(`pod file "pods" must be an array, got ${describe(raw.pods)}`);

  const problems: PodProblem[] = [];
  const namespaces: NamespaceSpec[] = [];
  const badNamespaces = new Set<string>();
  rawNamespaces.forEach((entry: unknown, index) => {
    const name = isRecord(entry) && typeof entry.name === "string" && entry.name !== "" ? entry.name : undefined;
    const key = name ?? `namespaces[${index}]`;
    const errors = namespaceErrors(entry);
    if (name !== undefined && namespaces.some((n) => n.name === name)) errors.push("is listed twice");
    if (errors.length > 0) {
      if (name !== undefined) badNamespaces.add(name);
      problems.push({ kind: "namespace", key, index, message: `namespace ${key}: ${errors.join("; ")}` });
      return;
    }
    namespaces.push(toNamespace(entry as Record<string, unknown>));
  });
  // A duplicate makes the first entry untrustworthy too: which one did the producer mean?
  const keptNamespaces = namespaces.filter((n) => !badNamespaces.has(n.name));

  const pods: PodSpec[] = [];
  const seen = new Set<string>();
  raw.pods.forEach((entry: unknown, index) => {
    const r = isRecord(entry) ? entry : undefined;
    const named =
      r && typeof r.name === "string" && r.name !== "" && typeof r.namespace === "string" && r.namespace !== "";
    const key = named ? podKey(r as { name: string; namespace: string }) : `pods[${index}]`;
    const errors = podErrors(entry);
    if (named && seen.has(key)) errors.push("is listed twice (the first entry is kept)");
    if (named && badNamespaces.has(r.namespace as string)) errors.push(`its namespace "${r.namespace}" is invalid`);
    if (errors.length > 0) {
      problems.push({ kind: "pod", key, index, message: `pod ${key}: ${errors.join("; ")}` });
      return;
    }
    seen.add(key);
    pods.push(toPod(entry as Record<string, unknown>));
  });
  return { state: { namespaces: keptNamespaces, pods }, problems };
}

function namespaceErrors(entry: unknown): string[] {
  if (!isRecord(entry)) return [`must be an object, got ${describe(entry)}`];
  const errors: string[] = [];
  if (typeof entry.name !== "string" || entry.name === "") errors.push("has no name");
  errors.push(...labelErrors(entry.labels));
  errors.push(...modeErrors(entry.peerAuthentication));
  return errors;
}

function podErrors(entry: unknown): string[] {
  if (!isRecord(entry)) return [`must be an object, got ${describe(entry)}`];
  const errors: string[] = [];
  for (const field of ["name", "namespace", "nodeName", "netns"] as const) {
    if (typeof entry[field] !== "string" || entry[field] === "") errors.push(`has no ${field}`);
  }
  if (typeof entry.netns === "string" && entry.netns !== "" && !entry.netns.startsWith("/")) {
    errors.push(`netns "${entry.netns}" is not an absolute path`);
  }
  if (entry.serviceAccount !== undefined && (typeof entry.serviceAccount !== "string" || entry.serviceAccount === "")) {
    errors.push(`serviceAccount must be a non-empty string, got ${describe(entry.serviceAccount)}`);
  }
  if (entry.workload !== undefined && typeof entry.workload !== "string") {
    errors.push(`workload must be a string, got ${describe(entry.workload)}`);
  }
  errors.push(...labelErrors(entry.labels));
  errors.push(...modeErrors(entry.peerAuthentication));
  if (!Array.isArray(entry.ips) || entry.ips.length === 0) {
    errors.push("has no IPs");
  } else {
    const bad = entry.ips.filter((ip: unknown) => typeof ip !== "string" || isIP(ip) === 0);
    if (bad.length > 0) errors.push(`has invalid IPs ${bad.map((ip: unknown) => JSON.stringify(ip)).join(", ")}`);
    else if (new Set(entry.ips).size !== entry.ips.length) errors.push("lists an IP twice");
  }
  return errors;
}

function labelErrors(labels: unknown): string[] {
  if (labels === undefined) return [];
  if (!isRecord(labels)) return [`labels must be an object, got ${describe(labels)}`];
  const bad = Object.entries(labels).filter(([, v]) => typeof v !== "string");
  return bad.length > 0 ? [`labels ${bad.map(([k]) => `"${k}"`).join(", ")} must have string values`] : [];
}

function modeErrors(mode: unknown): string[] {
  if (mode === undefined || PA_MODES.includes(mode as PeerAuthenticationMode)) return [];
  return [`unknown peerAuthentication mode ${JSON.stringify(mode)} (expected ${PA_MODES.join(", ")})`];
}

function toNamespace(r: Record<string, unknown>): NamespaceSpec {
  const ns: NamespaceSpec = { name: r.name as string, labels: { ...((r.labels as Record<string, string>) ?? {}) } };
  if (r.peerAuthentication !== undefined) ns.peerAuthentication = r.peerAuthentication as PeerAuthenticationMode;
  return ns;
}

function toPod(r: Record<string, unknown>): PodSpec {
  const pod: PodSpec = {
    name: r.name as string,
    namespace: r.namespace as string,
    // Kubernetes puts a pod without one under the namespace's "default" service account.
    serviceAccount: (r.serviceAccount as string | undefined) ?? "default",
    nodeName: r.nodeName as string,
    labels: { ...((r.labels as Record<string, string>) ?? {}) },
    netns: r.netns as string,
    ips: [...(r.ips as string[])],
  };
  if (r.workload !== undefined) pod.workload = r.workload as string;
  if (r.peerAuthentication !== undefined) pod.peerAuthentication = r.peerAuthentication as PeerAuthenticationMode;
  return pod;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "string" ? `string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}` : typeof v;
}
