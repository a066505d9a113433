import { parseArgs } from "node:util";
import { DEFAULT_ADDRESS_RATE_LIMIT } from "../identity/address-rate-limit.js";
import { loadCaFromFiles, loadOrCreateCa } from "../identity/ca-files.js";
import { startCaServer } from "../identity/ca-server.js";
import { KubeTokenReviewer } from "../identity/kube-token-reviewer.js";
import { CachingTokenReviewer } from "../identity/review-cache.js";
import { DEFAULT_TRUST_DOMAIN } from "../identity/spiffe.js";
import { FileTokenReviewer } from "../identity/token-reviewer.js";
import { findPod } from "../kube/cluster-lookup.js";
import { PodFileSource } from "../kube/pod-file-source.js";
import { createLogger } from "../log.js";
import { ConfigError, parseHostPort } from "../node/config.js";

function positive(value: unknown, flag: string, integer = false): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
    throw new ConfigError(`--${flag} must be a positive ${integer ? "integer" : "number"}, got ${value}`);
  }
  return n;
}

/**
 * `ambit ca`: the mesh CA as its own HTTPS server. Root from --ca-cert/--ca-key (a Secret) or --ca-dir (created on
 * first start); callers authenticated by --token-file (local) or Kubernetes TokenReview (--kube-allowed-user).
 * TokenReviews are cached and bounded (review-cache.ts) and charged per source address (--review-rate/-burst).
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
      "pod-file": { type: "string", default: env.AMBIT_POD_FILE },
      "token-file": { type: "string", default: env.AMBIT_CA_TOKENS },
      "kube-allowed-user": { type: "string", multiple: true, default: [] },
      audience: { type: "string", multiple: true, default: [] },
      "serving-name": { type: "string", multiple: true, default: [] },
      "serving-ip": { type: "string", multiple: true, default: [] },
      "cert-lifetime": { type: "string", default: env.AMBIT_CERT_LIFETIME ?? String(24 * 3600) },
      // Per source address; behind SNAT many agents share one address and may need more (see address-rate-limit.ts).
      "review-rate": {
        type: "string",
        default: env.AMBIT_CA_REVIEW_RATE ?? String(DEFAULT_ADDRESS_RATE_LIMIT.ratePerSec),
      },
      "review-burst": {
        type: "string",
        default: env.AMBIT_CA_REVIEW_BURST ?? String(DEFAULT_ADDRESS_RATE_LIMIT.burst),
      },
      "log-level": { type: "string", default: env.AMBIT_LOG_LEVEL ?? "info" },
    },
  });
  const log = createLogger({ level: values["log-level"] as string, name: "ambit-ca" });
  const trustDomain = values["trust-domain"] as string;
  const leafLifetimeSec = Number(values["cert-lifetime"]);
  if (!values["pod-file"]) throw new ConfigError("--pod-file is required (the CA authorizes against the pod list)");
  const rateLimit = {
    ratePerSec: positive(values["review-rate"], "review-rate"),
    burst: positive(values["review-burst"], "review-burst", true),
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
  const reviewer = values["token-file"]
    ? new FileTokenReviewer(values["token-file"])
    : allowed.length > 0
      ? new CachingTokenReviewer(
          new KubeTokenReviewer({ allowedUsers: allowed, ...(audiences.length ? { audiences } : {}) }),
        )
      : undefined;
  if (!reviewer) throw new ConfigError("--token-file or --kube-allowed-user is required");

  const pods = new PodFileSource({ path: values["pod-file"], logger: log });
  await pods.start();
  const { host, port } = parseHostPort(values.listen as string, "listen");
  const server = await startCaServer({
    ca,
    reviewer,
    rateLimit,
    lookupPod: (namespace, name) => findPod(pods.current(), namespace, name),
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
      pods.close();
      process.exit(0);
    });
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}
