/**
 * `ambit cni-install` and `ambit cni-uninstall`: put ambit-cni on this node (binary, credentials for its
 * agent-down fallback, the entry in the runtime's CNI configuration) and take it off. They run in the DaemonSet's
 * init container and in the uninstall Job (deploy/kubernetes/cni-uninstall.yaml), with the host's CNI directories
 * mounted at the host's paths. Nothing here loads a native library: agent/cni/install.ts imports node:* only.
 */
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { install, uninstall, watch } from "../cni/install.js";
import { DEFAULT_SOCKET } from "../cni/invocation.js";
import { createLogger } from "../log.js";

const SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount";
/** Built by `make cni-plugin` (agent/cni/build-plugin.ts); in the image at /opt/ambit/dist/cni/ambit-cni. */
const BUILT_PLUGIN = fileURLToPath(new URL("../../cni/ambit-cni", import.meta.url));

const DIRS = {
  "cni-bin-dir": { type: "string", default: "/opt/cni/bin" },
  "cni-conf-dir": { type: "string", default: "/etc/cni/net.d" },
  "state-dir": { type: "string" },
} as const;

export async function cniInstallCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      ...DIRS,
      plugin: { type: "string", default: BUILT_PLUGIN },
      "agent-socket": { type: "string", default: process.env.AMBIT_CNI_SOCKET ?? DEFAULT_SOCKET },
      "kube-server": { type: "string", default: serverFromEnv() },
      "token-file": { type: "string", default: `${SERVICE_ACCOUNT}/token` },
      "ca-file": { type: "string", default: `${SERVICE_ACCOUNT}/ca.crt` },
      "wait-seconds": { type: "string", default: "300" },
      watch: { type: "boolean", default: false },
      "interval-seconds": { type: "string", default: "10" },
    },
  });
  const log = createLogger({ name: "ambit-cni-install" });
  const server = values["kube-server"];
  if (server !== undefined && !server.startsWith("https://")) {
    throw new Error(`--kube-server must be an https:// URL, not ${server}`);
  }
  if (server === undefined) {
    log.warn(
      {},
      "no API server (KUBERNETES_SERVICE_HOST unset, no --kube-server): while the agent is down, every pod's ADD will fail, meshed or not",
    );
  }
  const options = {
    plugin: values.plugin,
    binDir: values["cni-bin-dir"],
    confDir: values["cni-conf-dir"],
    ...(values["state-dir"] ? { stateDir: values["state-dir"] } : {}),
    agentSocket: values["agent-socket"],
    ...(server ? { kubernetes: { server, tokenFile: values["token-file"], caFile: values["ca-file"] } } : {}),
    waitMs: seconds(values["wait-seconds"], "--wait-seconds") * 1000,
    say: log,
  };
  const result = await install(options);
  log.info(
    { config: result.config, binary: result.binary, changed: result.changed },
    result.changed.length ? "ambit-cni installed" : "ambit-cni was already installed; nothing changed",
  );
  if (!values.watch) return;
  const abort = new AbortController();
  for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, () => abort.abort());
  log.info({ config: result.config }, "watching: the entry and the token are put back when missing or stale");
  await watch({
    ...options,
    intervalMs: seconds(values["interval-seconds"], "--interval-seconds") * 1000,
    signal: abort.signal,
  });
  log.info({}, "stopped watching; ambit-cni stays installed (remove it with `ambit cni-uninstall`)");
}

export async function cniUninstallCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, strict: true, options: DIRS });
  const log = createLogger({ name: "ambit-cni-uninstall" });
  const result = uninstall({
    binDir: values["cni-bin-dir"],
    confDir: values["cni-conf-dir"],
    ...(values["state-dir"] ? { stateDir: values["state-dir"] } : {}),
    say: log,
  });
  log.info(
    { configs: result.configs, removed: result.removed },
    result.configs.length || result.removed.length ? "ambit-cni uninstalled" : "ambit-cni was not installed",
  );
}

/** The API server as a pod sees it; the plugin runs on the host, which reaches the Service's address too. */
function serverFromEnv(): string | undefined {
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const port = process.env.KUBERNETES_SERVICE_PORT ?? "443";
  if (!host) return undefined;
  return `https://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

function seconds(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0 || n > 86_400) throw new Error(`${flag} must be seconds from 0 to 86400`);
  return n;
}
