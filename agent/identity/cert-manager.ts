import { createPrivateKey, X509Certificate } from "node:crypto";
import { EventEmitter } from "node:events";
import { createSecureContext, type SecureContext } from "node:tls";
import { objectKey } from "../kube/records.js";
import { type Logger, silentLogger } from "../log.js";
import type { CertificateSource, PodRef, SignResponse } from "./certificate-source.js";
import { createCsrPem } from "./csr.js";
import { CaRequestError, IdentityError } from "./errors.js";
import { generateRsaKeyPair, type KeyPair } from "./keys.js";
import { splitPemCertificates } from "./pem.js";
import {
  DEFAULT_JITTER,
  DEFAULT_RETRY,
  delayUntil,
  type RetryPolicy,
  refreshDelayMs,
  retryDelayMs,
} from "./refresh-policy.js";
import { formatSpiffeId, type SpiffeId, sameSpiffeId } from "./spiffe.js";
import { MESH_TLS } from "./tls-policy.js";
import { validatePeerChain } from "./validate.js";

export type IdentityState = "pending" | "ready" | "renewal_failing" | "expired";

export interface IdentitySnapshot {
  spiffeId: string;
  state: IdentityState;
  pods: string[];
  serial?: string;
  notBefore?: string;
  notAfter?: string;
  lastError?: string;
}

export interface CertManagerEvents {
  issued: [{ spiffeId: string; serial: string; notAfter: Date }];
  rotated: [{ spiffeId: string; serial: string; previousSerial: string; notAfter: Date }];
  failed: [{ spiffeId: string; error: Error; retryInMs: number }];
  expired: [{ spiffeId: string; serial: string; notAfter: Date }];
}

export interface CertManagerOptions {
  source: CertificateSource;
  logger?: Logger;
  retry?: RetryPolicy;
  jitter?: number;
}

/** An identity's current certificate as PEM, for TLS stacks other than Node's (the data plane's workers). */
export interface CertificateMaterial {
  chainPem: string;
  keyPem: string;
  bundlePem: string;
  serial: string;
  notAfter: Date;
}

/** The current certificate: its PEM (serial and notAfter included), Node's context for it, and its notBefore. */
interface Issued {
  context: SecureContext;
  material: CertificateMaterial;
  notBefore: Date;
}

interface Entry {
  id: SpiffeId;
  uri: string;
  pods: Map<string, PodRef>;
  cert?: Issued;
  /** True once a certificate expired with no replacement: distinguishes "expired" from "pending". */
  lapsed: boolean;
  /** Key awaiting its certificate; kept across retries so a CA outage does not cost a keygen per attempt. */
  pendingKeys?: KeyPair;
  inflight?: Promise<void>;
  renewTimer?: NodeJS.Timeout;
  expiryTimer?: NodeJS.Timeout;
  failures: number;
  lastError?: string;
}

/**
 * Holds one certificate per workload identity on this node (pods sharing a service account share it, counted by
 * pod), renews it at half its remaining life and retries a failing CA with capped backoff. A certificate is served
 * until its notAfter and never after: from then on `secureContext` is undefined (the proxy refuses the pod's mTLS
 * traffic, failing closed) until a renewal succeeds. Each SecureContext is built once per certificate.
 */
export class CertManager extends EventEmitter<CertManagerEvents> {
  private readonly entries = new Map<string, Entry>();
  private readonly source: CertificateSource;
  private readonly log: Logger;
  private readonly retry: RetryPolicy;
  private readonly jitter: number;
  private bundle?: string;
  private closed = false;

  constructor(options: CertManagerOptions) {
    super();
    this.source = options.source;
    this.log = options.logger ?? silentLogger;
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.jitter = options.jitter ?? DEFAULT_JITTER;
  }

  /**
   * Registers `pod` as a holder of `id` and resolves once a valid certificate exists. Concurrent calls for one
   * identity share one fetch. If the CA fails, the promise rejects but the pod stays registered and retries go on
   * in the background (an `issued` event announces success) until `release`.
   */
  async acquire(id: SpiffeId, pod: PodRef): Promise<void> {
    if (this.closed) throw new IdentityError("closed", "certificate manager is closed");
    const uri = formatSpiffeId(id);
    let entry = this.entries.get(uri);
    if (!entry) {
      entry = { id: { ...id }, uri, pods: new Map(), lapsed: false, failures: 0 };
      this.entries.set(uri, entry);
    }
    entry.pods.set(objectKey(pod), { namespace: pod.namespace, name: pod.name });
    if (this.usable(entry)) return;
    await this.fetch(entry);
  }

  /** Drops `pod`; the last pod of an identity takes the certificate and its timers with it. */
  release(id: SpiffeId, pod: PodRef): void {
    const uri = formatSpiffeId(id);
    const entry = this.entries.get(uri);
    if (!entry) return;
    entry.pods.delete(objectKey(pod));
    if (entry.pods.size > 0) return;
    this.drop(entry);
    this.log.info({ spiffeId: uri }, "last pod of identity left; certificate discarded");
  }

  /** The TLS context presenting `id`'s current certificate, or undefined if there is none valid right now. */
  secureContext(id: SpiffeId): SecureContext | undefined {
    const entry = this.entries.get(formatSpiffeId(id));
    return entry && this.usable(entry) ? entry.cert?.context : undefined;
  }

  /** The PEM behind secureContext(id): the same certificate, under the same rule (undefined unless valid now). */
  material(id: SpiffeId): CertificateMaterial | undefined {
    const entry = this.entries.get(formatSpiffeId(id));
    return entry && this.usable(entry) ? entry.cert?.material : undefined;
  }

  /** The mesh trust bundle (PEM): the latest one the CA sent, or asked for once if no certificate came yet. */
  async trustBundlePem(): Promise<string> {
    this.bundle ??= await this.source.trustBundle();
    return this.bundle;
  }

  snapshot(): IdentitySnapshot[] {
    return [...this.entries.values()].map((e) => {
      const usable = this.usable(e);
      const state: IdentityState = usable
        ? e.failures > 0
          ? "renewal_failing"
          : "ready"
        : e.lapsed
          ? "expired"
          : "pending";
      const snap: IdentitySnapshot = { spiffeId: e.uri, state, pods: [...e.pods.keys()].sort() };
      if (e.cert && usable) {
        snap.serial = e.cert.material.serial;
        snap.notBefore = e.cert.notBefore.toISOString();
        snap.notAfter = e.cert.material.notAfter.toISOString();
      }
      if (e.lastError) snap.lastError = e.lastError;
      return snap;
    });
  }

  close(): void {
    this.closed = true;
    for (const entry of [...this.entries.values()]) this.drop(entry);
  }

  /** Valid now; checked against the clock, not only the expiry timer, which may fire late. */
  private usable(entry: Entry): boolean {
    if (!entry.cert) return false;
    if (Date.now() < entry.cert.material.notAfter.getTime()) return true;
    this.expire(entry);
    return false;
  }

  private drop(entry: Entry): void {
    clearTimeout(entry.renewTimer);
    clearTimeout(entry.expiryTimer);
    entry.cert = undefined;
    if (this.entries.get(entry.uri) === entry) this.entries.delete(entry.uri);
  }

  private live(entry: Entry): boolean {
    return !this.closed && this.entries.get(entry.uri) === entry;
  }

  private fetch(entry: Entry): Promise<void> {
    if (!entry.inflight) {
      const p = this.issue(entry).finally(() => {
        if (entry.inflight === p) entry.inflight = undefined;
      });
      entry.inflight = p;
    }
    return entry.inflight;
  }

  private async issue(entry: Entry): Promise<void> {
    clearTimeout(entry.renewTimer);
    try {
      // A new key per certificate: a key leaked from one certificate dies with it.
      entry.pendingKeys ??= await generateRsaKeyPair();
      const keys = entry.pendingKeys;
      const pod = entry.pods.values().next().value as PodRef;
      const res = await this.source.sign({ csrPem: createCsrPem(keys, entry.uri), identity: entry.id, pod });
      if (!this.live(entry)) return;
      this.install(entry, keys, res);
    } catch (err) {
      if (!this.live(entry)) return;
      const error = err instanceof Error ? err : new Error(String(err));
      entry.failures += 1;
      entry.lastError = error.message;
      // A CA that said when to come back (429/503 Retry-After) is not asked sooner, nor later than our own ceiling.
      const asked = err instanceof CaRequestError ? Math.min(err.retryAfterMs ?? 0, this.retry.maxMs) : 0;
      const retryInMs = Math.max(retryDelayMs(entry.failures, this.retry, this.jitter), asked);
      entry.renewTimer = setTimeout(() => this.fetch(entry).catch(() => {}), retryInMs).unref();
      this.log.warn(
        { spiffeId: entry.uri, err: error, retryInMs, keepsCertUntil: entry.cert?.material.notAfter.toISOString() },
        "certificate issuance failed; retrying",
      );
      this.emit("failed", { spiffeId: entry.uri, error, retryInMs });
      throw error;
    }
  }

  /** Checks what the CA sent before presenting it: our key, our SAN, chains to the bundle, valid now. */
  private install(entry: Entry, keys: KeyPair, res: SignResponse): void {
    const now = Date.now();
    const chain = splitPemCertificates(res.certChainPem);
    const check = validatePeerChain(chain, { trustDomain: entry.id.trustDomain, trustBundle: res.trustBundlePem, now });
    let why: string | undefined;
    if (!check.ok) why = `${check.reason}: ${check.detail}`;
    else if (!sameSpiffeId(check.id, entry.id)) why = `it names ${formatSpiffeId(check.id)}`;
    else if (!new X509Certificate(chain[0] as string).checkPrivateKey(createPrivateKey(keys.privateKeyPem))) {
      why = "it certifies another key";
    }
    if (why) throw new IdentityError("ca_unavailable", `CA returned an unusable certificate: ${why}`);
    const leaf = new X509Certificate(chain[0] as string);
    const previous = entry.cert;
    const notAfter = new Date(leaf.validTo);
    entry.cert = {
      material: {
        chainPem: res.certChainPem,
        keyPem: keys.privateKeyPem,
        bundlePem: res.trustBundlePem,
        serial: leaf.serialNumber,
        notAfter,
      },
      context: createSecureContext({
        ...MESH_TLS,
        key: keys.privateKeyPem,
        cert: res.certChainPem,
        ca: res.trustBundlePem,
      }),
      notBefore: new Date(leaf.validFrom),
    };
    this.bundle = res.trustBundlePem;
    entry.pendingKeys = undefined;
    entry.failures = 0;
    entry.lapsed = false;
    entry.lastError = undefined;
    const { serial } = entry.cert.material;
    clearTimeout(entry.expiryTimer);
    entry.expiryTimer = setTimeout(() => this.usable(entry), delayUntil(notAfter.getTime(), now) + 1).unref();
    const renewIn = refreshDelayMs(now, notAfter.getTime(), this.jitter);
    entry.renewTimer = setTimeout(() => this.fetch(entry).catch(() => {}), renewIn).unref();
    this.log.info({ spiffeId: entry.uri, serial, notAfter, renewInMs: renewIn }, "workload certificate installed");
    if (previous)
      this.emit("rotated", { spiffeId: entry.uri, serial, previousSerial: previous.material.serial, notAfter });
    else this.emit("issued", { spiffeId: entry.uri, serial, notAfter });
  }

  private expire(entry: Entry): void {
    const cert = entry.cert;
    if (!cert || Date.now() < cert.material.notAfter.getTime()) return;
    entry.cert = undefined;
    entry.lapsed = true;
    clearTimeout(entry.expiryTimer);
    this.log.error(
      {
        spiffeId: entry.uri,
        serial: cert.material.serial,
        notAfter: cert.material.notAfter,
        pods: [...entry.pods.keys()],
      },
      "workload certificate expired without renewal; identity unavailable, its mTLS traffic is refused until renewed",
    );
    this.emit("expired", { spiffeId: entry.uri, serial: cert.material.serial, notAfter: cert.material.notAfter });
  }
}
