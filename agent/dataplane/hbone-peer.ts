import { formatSpiffeId, type SpiffeId, sameSpiffeId } from "../identity/spiffe.js";
import type { PeerRejectReason, PeerValidation } from "../identity/validate.js";
import { ALPN_H2 } from "./tls/context.js";

/** Why an HBONE peer is refused after its handshake; metric labels, the same reasons hbone-pool.ts reports today. */
export type HbonePeerReason = PeerRejectReason | "identity_mismatch" | "bad_alpn";

export type HbonePeerCheck = { ok: true; id: SpiffeId } | { ok: false; reason: HbonePeerReason; detail: string };

/**
 * Whether a peer that finished the TLS handshake may carry HBONE: its certificate passed the SPIFFE validation
 * (`peer`, from TlsTransport.peer), it negotiated h2, and, on the client side, it is exactly the identity the
 * workload index expects at the address dialled (`expected`): a session verified for one identity never carries
 * traffic meant for another. Checked in that order: certificate, identity, ALPN.
 */
export function checkHbonePeer(peer: PeerValidation, alpn: string, expected?: SpiffeId): HbonePeerCheck {
  if (!peer.ok) return peer;
  if (expected && !sameSpiffeId(peer.id, expected)) {
    return {
      ok: false,
      reason: "identity_mismatch",
      detail: `peer is ${formatSpiffeId(peer.id)}, not ${formatSpiffeId(expected)}`,
    };
  }
  if (alpn !== ALPN_H2) return { ok: false, reason: "bad_alpn", detail: `ALPN ${alpn === "" ? "none" : alpn}` };
  return peer;
}
