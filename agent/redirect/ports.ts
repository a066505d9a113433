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
