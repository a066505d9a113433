import type { MeshCa } from "./ca.js";
import type { SpiffeId } from "./spiffe.js";

export interface PodRef {
  namespace: string;
  name: string;
}

export interface SignRequest {
  csrPem: string;
  identity: SpiffeId;
  /** A pod holding the identity, so the CA can check it runs on the caller's node. */
  pod: PodRef;
}

export interface SignResponse {
  certChainPem: string;
  trustBundlePem: string;
}

/**
 * Where the certificate manager gets certificates: the remote `ambit ca` (ca-client.ts) in a cluster, or the CA
 * running in-process (below) in local/demo mode. Both run the same MeshCa signing code.
 */
export interface CertificateSource {
  sign(req: SignRequest): Promise<SignResponse>;
  trustBundle(): Promise<string>;
}

/**
 * The in-process CA. No node authorization: the agent that embeds the CA is the only client and already decided
 * the pod is its own. CSR checks (key possession, exact SAN) still apply.
 */
export class EmbeddedCertificateSource implements CertificateSource {
  constructor(private readonly ca: MeshCa) {}

  async sign(req: SignRequest): Promise<SignResponse> {
    const issued = this.ca.signCsr(req.csrPem, req.identity);
    return { certChainPem: issued.certChainPem, trustBundlePem: issued.trustBundlePem };
  }

  async trustBundle(): Promise<string> {
    return this.ca.trustBundlePem();
  }
}
