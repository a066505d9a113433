import { parseArgs } from "node:util";
import { loadCaFromFiles, loadOrCreateCa } from "../identity/ca-files.js";
import { DEFAULT_TRUST_DOMAIN } from "../identity/spiffe.js";
import { openClusterSource } from "../kube/open-source.js";
import { objectKey } from "../kube/records.js";
import { createLogger } from "../log.js";
import { ConfigError, parseHostPort } from "../node/config.js";
import { SOURCE_FLAGS, sourceConfig } from "../node/source-flags.js";
import { startCaServer } from "./ca-server.js";
import { KubeTokenReviewer } from "./kube-token-reviewer.js";
import { DEFAULT_ADDRESS_RATE_LIMIT, DEFAULT_NODE_RATE_LIMIT } from "./rate-limit.js";
import { CachingTokenReviewer } from "./review-cache.js";
import { FileTokenReviewer, type TokenReviewer } from "./token-reviewer.js";

function positive(value: unknown, flag: string, integer = false): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
    throw new ConfigError(`--${flag} must be a positive ${integer ? "integer" : "number"}, got ${value}`);
  }
  return n;
}

/**
 * `ambit ca`: the mesh CA as its own HTTPS server. Root from --ca-cert/--ca-key (a Secret) or --ca-dir (created on
 * first start); callers authenticated by --token-file (local) or Kubernetes TokenReview (--kube-allowed-user); pods
 * from the API server's watch (--kube, --kubeconfig) or local manifests (--manifests).
 * TokenReviews are cached and bounded (review-cache.ts) and charged per source address (--review-rate/-burst);
 * certificate requests are charged per authenticated node (--sign-rate/-burst).
 */
export async function caCommand(argv: string[]): Promise<void> {
  const env = process.env;
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      listen: { type: "string", default: env.AMBIT_CA_LISTEN ?? "0.0.0.0:15012" },
      "trust-domain": { type: "string", default: env.AMBIT_TRUST_DOMAIN ?? DEFAULT_TRUST_DOMAIN },
      "ca-dir": { type: "string", default: env.AMBIT_CA_DIR },
      "ca-cert": { type: "string", default: env.AMBIT_CA_CERT },
      "ca-key": { type: "string", default: env.AMBIT_CA_KEY },
      ...SOURCE_FLAGS,
      "token-file": { type: "string", default: env.AMBIT_CA_TOKENS },
      "kube-allowed-user": { type: "string", multiple: true, default: [] },
      audience: { type: "string", multiple: true, default: [] },
      "serving-name": { type: "string", multiple: true, default: [] },
      "serving-ip": { type: "string", multiple: true, default: [] },
      "cert-lifetime": { type: "string", default: env.AMBIT_CERT_LIFETIME ?? String(24 * 3600) },
      // Per source address; behind SNAT many agents share one address and may need more (see rate-limit.ts).
      "review-rate": {
        type: "string",
        default: env.AMBIT_CA_REVIEW_RATE ?? String(DEFAULT_ADDRESS_RATE_LIMIT.ratePerSec),
      },
      "review-burst": {
        type: "string",
        default: env.AMBIT_CA_REVIEW_BURST ?? String(DEFAULT_ADDRESS_RATE_LIMIT.burst),
      },
      // Per node: a node with more identities than the burst needs more to sign them all at once (see rate-limit.ts).
      "sign-rate": { type: "string", default: env.AMBIT_CA_SIGN_RATE ?? String(DEFAULT_NODE_RATE_LIMIT.ratePerSec) },
      "sign-burst": { type: "string", default: env.AMBIT_CA_SIGN_BURST ?? String(DEFAULT_NODE_RATE_LIMIT.burst) },
      "log-level": { type: "string", default: env.AMBIT_LOG_LEVEL ?? "info" },
    },
  });
  const log = createLogger({ level: values["log-level"] as string, name: "ambit-ca" });
  const trustDomain = values["trust-domain"] as string;
  const leafLifetimeSec = Number(values["cert-lifetime"]);
  // The CA authorizes against the pods the cluster has: a node only gets the identities of pods scheduled on it.
  const source = sourceConfig(values);
  const rateLimit = {
    ratePerSec: positive(values["review-rate"], "review-rate"),
    burst: positive(values["review-burst"], "review-burst", true),
  };
  const nodeRateLimit = {
    ratePerSec: positive(values["sign-rate"], "sign-rate"),
    burst: positive(values["sign-burst"], "sign-burst", true),
  };
  const ca =
    values["ca-cert"] && values["ca-key"]
      ? await loadCaFromFiles(
          { certFile: values["ca-cert"], keyFile: values["ca-key"] },
          { trustDomain, leafLifetimeSec },
        )
      : values["ca-dir"]
        ? await loadOrCreateCa(values["ca-dir"], { trustDomain, leafLifetimeSec, logger: log })
        : undefined;
  if (!ca) throw new ConfigError("--ca-cert and --ca-key, or --ca-dir, are required");
  const allowed = values["kube-allowed-user"] as string[];
  const audiences = values.audience as string[];
  // The token file is local and re-read on each request so a removed token stops working at once: not cached.
  let reviewer: TokenReviewer;
  if (values["token-file"]) reviewer = new FileTokenReviewer(values["token-file"]);
  else if (allowed.length > 0) {
    if (source.kind !== "kube")
      throw new ConfigError("--kube-allowed-user needs the API server: --kube or --kubeconfig");
    const { apiConfig } = await import("../kube/api/open.js");
    const api = await apiConfig(source);
    reviewer = new CachingTokenReviewer(
      new KubeTokenReviewer({ api, allowedUsers: allowed, ...(audiences.length ? { audiences } : {}) }),
    );
  } else throw new ConfigError("--token-file or --kube-allowed-user is required");

  const cluster = await openClusterSource(source, { podsOnly: true, logger: log });
  await cluster.start();
  const { host, port } = parseHostPort(values.listen as string, "listen");
  const server = await startCaServer({
    ca,
    reviewer,
    rateLimit,
    nodeRateLimit,
    lookupPod: (namespace, name) => cluster.current().pods.get(objectKey({ namespace, name })),
    host,
    port,
    servingNames: {
      dnsNames: ["localhost", ...(values["serving-name"] as string[])],
      ips: ["127.0.0.1", ...(values["serving-ip"] as string[])],
    },
    logger: log,
  });
  log.info({ url: server.url }, "mesh CA serving");
  const stop = () =>
    void server.close().then(() => {
      cluster.close();
      process.exit(0);
    });
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}
