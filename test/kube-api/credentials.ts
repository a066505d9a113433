import { MeshCa } from "../../agent/identity/ca.js";
import { generateRsaKeyPair } from "../../agent/identity/keys.js";

/**
 * The test API server's TLS material and the client-side files that point at it (kubeconfig, in-cluster
 * service-account directory).
 */

export interface ServingCredentials {
  /** The throwaway CA a client trusts (certificate-authority-data, ca.crt). */
  caPem: string;
  certPem: string;
  keyPem: string;
}

/** The names an in-cluster client or a kubeconfig may use for the API server. */
export const SERVING_NAMES = {
  dnsNames: [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
  ],
  ips: ["127.0.0.1"],
};

let shared: Promise<ServingCredentials> | undefined;

/**
 * A CA and a serving certificate for 127.0.0.1, made once per process: two RSA key generations cost a few hundred
 * milliseconds, and each test file runs in its own process anyway, so servers in one file share them.
 */
export function servingCredentials(): Promise<ServingCredentials> {
  shared ??= (async () => {
    const trustDomain = "kube-api.test";
    const ca = new MeshCa(await MeshCa.generateRoot(trustDomain), { trustDomain, leafLifetimeSec: 24 * 3600 });
    const keys = await generateRsaKeyPair();
    const serving = ca.issueServingCertificate(keys, SERVING_NAMES);
    return { caPem: ca.trustBundlePem(), certPem: serving.certChainPem, keyPem: keys.privateKeyPem };
  })();
  return shared;
}

/** A JSON string is a valid YAML double-quoted scalar, so every value is written that way: nothing to escape. */
const q = (s: string) => JSON.stringify(s);

/** A kubeconfig with one cluster, user and context, current; the user is a bearer token or a token file. */
export function kubeconfigYaml(opts: {
  server: string;
  caPem: string;
  user: { token: string } | { tokenFile: string };
  namespace?: string;
}): string {
  const user = "token" in opts.user ? `    token: ${q(opts.user.token)}` : `    tokenFile: ${q(opts.user.tokenFile)}`;
  return [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: ambit-test",
    "  cluster:",
    `    server: ${q(opts.server)}`,
    `    certificate-authority-data: ${q(Buffer.from(opts.caPem).toString("base64"))}`,
    "users:",
    "- name: ambit-test",
    "  user:",
    user,
    "contexts:",
    "- name: ambit-test",
    "  context:",
    "    cluster: ambit-test",
    "    user: ambit-test",
    `    namespace: ${q(opts.namespace ?? "default")}`,
    "current-context: ambit-test",
    "preferences: {}",
    "",
  ].join("\n");
}
