import type { PodRecord } from "../kube/records.js";
import { IdentityError } from "./errors.js";

/** A workload identity: what a pod is, as far as mTLS peers are concerned. */
export interface SpiffeId {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

export const DEFAULT_TRUST_DOMAIN = "cluster.local";

// SPIFFE ID spec: trust domain is lowercase letters, digits, '.', '-', '_'; path segments add uppercase letters.
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const SEGMENT = /^[a-zA-Z0-9._-]+$/;
const MAX_ID_LENGTH = 2048;

function checkSegment(what: string, value: string): void {
  if (!SEGMENT.test(value) || value === "." || value === "..") {
    throw new IdentityError("bad_san", `invalid ${what} ${JSON.stringify(value)} in SPIFFE ID`);
  }
}

export function checkTrustDomain(trustDomain: string): void {
  if (!TRUST_DOMAIN.test(trustDomain) || trustDomain.length > 255) {
    throw new IdentityError("bad_san", `invalid trust domain ${JSON.stringify(trustDomain)}`);
  }
}

/** `spiffe://<td>/ns/<namespace>/sa/<service-account>`; throws `bad_san` if a part could not round-trip. */
export function formatSpiffeId(id: SpiffeId): string {
  checkTrustDomain(id.trustDomain);
  checkSegment("namespace", id.namespace);
  checkSegment("service account", id.serviceAccount);
  return `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

/**
 * Parses a SPIFFE URI of the Kubernetes form. Anything else (other path shapes, ports, user info, query, fragment,
 * percent-encoding, upper-case trust domains) is refused with `bad_san` rather than normalized: two spellings of
 * one identity would be two identities to a policy engine.
 */
export function parseSpiffeId(uri: string): SpiffeId {
  if (typeof uri !== "string" || uri.length > MAX_ID_LENGTH || !uri.startsWith("spiffe://")) {
    throw new IdentityError("bad_san", `not a SPIFFE ID: ${JSON.stringify(String(uri).slice(0, 200))}`);
  }
  const rest = uri.slice("spiffe://".length);
  const slash = rest.indexOf("/");
  if (slash < 0) throw new IdentityError("bad_san", `SPIFFE ID has no path: ${JSON.stringify(uri)}`);
  const trustDomain = rest.slice(0, slash);
  checkTrustDomain(trustDomain);
  const parts = rest.slice(slash + 1).split("/");
  if (parts.length !== 4 || parts[0] !== "ns" || parts[2] !== "sa") {
    throw new IdentityError("bad_san", `SPIFFE ID path is not /ns/<namespace>/sa/<account>: ${JSON.stringify(uri)}`);
  }
  const [, namespace, , serviceAccount] = parts as [string, string, string, string];
  checkSegment("namespace", namespace);
  checkSegment("service account", serviceAccount);
  return { trustDomain, namespace, serviceAccount };
}

export function identityOfPod(pod: Pick<PodRecord, "namespace" | "serviceAccount">, trustDomain: string): SpiffeId {
  // Kubernetes runs pods without an explicit account as "default"; the identity must say so, not be empty.
  const serviceAccount = pod.serviceAccount || "default";
  const id = { trustDomain, namespace: pod.namespace, serviceAccount };
  formatSpiffeId(id); // validate now, so a bad pod spec fails at enrollment, not at signing
  return id;
}

export function sameSpiffeId(a: SpiffeId, b: SpiffeId): boolean {
  return a.trustDomain === b.trustDomain && a.namespace === b.namespace && a.serviceAccount === b.serviceAccount;
}
