/**
 * The inbound connections a worker relays now, with what their authorization was decided on, so that a policy
 * change can take back access already given: long-lived connections must not keep what was revoked (ztunnel does
 * the same). One per worker; entries come and go with the relays.
 */
import type { LineLog } from "../log.js";
import type { AuthorizationDecision } from "../policy/authorization.js";
import type { ConnectionAttributes } from "../policy/rules.js";
import type { Workload } from "../proxy/workload-index.js";

interface Entry {
  self: Workload;
  attributes: ConnectionAttributes;
  /** Ends the connection with a reset. */
  revoke(): void;
}

export class AuthorizedConnections {
  readonly #entries = new Set<Entry>();

  /** Tracks a relayed connection; the returned function untracks it (call it when the relay ends). */
  add(self: Workload, attributes: ConnectionAttributes, revoke: () => void): () => void {
    const entry: Entry = { self, attributes, revoke };
    this.#entries.add(entry);
    return () => this.#entries.delete(entry);
  }

  /**
   * Decides every tracked connection again (the policies or this node's pods changed) and resets those now denied.
   * One log line per pod, not per connection: a policy can revoke thousands at once.
   */
  recheck(decide: (self: Workload, c: ConnectionAttributes) => AuthorizationDecision, log: LineLog): void {
    const revoked = new Map<string, { count: number; policies: Set<string> }>();
    for (const entry of [...this.#entries]) {
      const decision = decide(entry.self, entry.attributes);
      if (decision.verdict === "allow") continue;
      this.#entries.delete(entry);
      entry.revoke();
      let seen = revoked.get(entry.self.key);
      if (!seen) {
        seen = { count: 0, policies: new Set() };
        revoked.set(entry.self.key, seen);
      }
      seen.count++;
      seen.policies.add(decision.policy ?? decision.reason);
    }
    for (const [pod, { count, policies }] of revoked) {
      log.info(
        { pod, connections: count, policies: [...policies] },
        "open connections reset: an AuthorizationPolicy change no longer allows them",
      );
    }
  }
}
