/** The ports and marks the redirection rules and the proxy agree on (Istio ambient's numbers, so tooling matches). */
export const OUTBOUND_PORT = 15001;
export const INBOUND_PLAINTEXT_PORT = 15006;
export const HBONE_PORT = 15008;

/** SO_MARK on every socket the proxy opens inside a pod, so the pod's rules let it through instead of capturing it. */
export const PROXY_MARK = 0x539;
export const PROXY_MARK_MASK = 0xfff;

/** Source address the node rewrites kubelet probes to (as Istio does), so the pod's rules can leave them alone. */
export const PROBE_SOURCE_IPV4 = "169.254.7.127";
export const PROBE_SOURCE_IPV6 = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff";

/**
 * Connection mark of the agent's transparent connections to a pod's app (the app sees the caller's address): the
 * app's replies carry it (restored from conntrack) and a policy-routing rule sends them to a `local` route on `lo`,
 * back to the agent, instead of out of the pod to the caller's address. Istio in-pod's numbers.
 */
export const RETURN_MARK = 0x111;
export const RETURN_MARK_MASK = 0xfff;
/** The routing table holding the `local` default routes, and the priority of the rule that selects it. */
export const RETURN_ROUTE_TABLE = 100;
export const RETURN_RULE_PRIORITY = 32764;
