/**
 * TLS settings of every mesh connection. TLS 1.3 only, as Istio's HBONE requires. AES-128-GCM is offered first,
 * the order BoringSSL (and so Envoy and ztunnel) uses: its strength is ample here, and it needs 10 AES rounds per
 * block against AES-256's 14. AES is the largest single cost of a bulk transfer through the proxy.
 */
export const MESH_TLS = {
  minVersion: "TLSv1.3",
  ciphers: "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
} as const;
