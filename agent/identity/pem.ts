/**
 * PEM text without a certificate library: the data plane's worker threads split and pass PEM on, and loading
 * node-forge there would cost each worker's heap about 3.5 MB for nothing (measured with a bare worker's RssAnon).
 */
const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Each certificate block of `pem`, in order, newline-terminated. */
export function splitPemCertificates(pem: string): string[] {
  return (pem.match(PEM_CERT) ?? []).map((p) => `${p}\n`);
}
