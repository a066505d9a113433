/** Runs the built ambit-cni as a container runtime does: CNI_* in the environment, the configuration on stdin. */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

export const PLUGIN = fileURLToPath(new URL("../../agent/cni/plugin.js", import.meta.url));

export interface PluginRun {
  status: number | null;
  stdout: string;
  /** stdout parsed, when it is JSON. */
  // biome-ignore lint/suspicious/noExplicitAny: assertions walk the plugin's JSON; a wrong path fails the test
  json: any;
  ms: number;
}

export interface SandboxCall {
  command: string;
  containerId?: string;
  netns?: string;
  ifname?: string;
  pod?: { namespace: string; name: string };
  /** The other CNI_* variables, over the defaults (undefined removes one). */
  env?: Record<string, string | undefined>;
}

/**
 * Killed after 20 s, so a hung plugin fails the test where it hangs. `executable`: an installed plugin (the single
 * executable), exec'd as the runtime does; by default the compiled module under node.
 */
export function runPlugin(call: SandboxCall, stdin: string | object, executable?: string): Promise<PluginRun> {
  const env: Record<string, string | undefined> = {
    PATH: process.env.PATH,
    CNI_COMMAND: call.command,
    CNI_CONTAINERID: call.containerId ?? "c0ffee",
    CNI_NETNS: call.netns ?? "",
    CNI_IFNAME: call.ifname ?? "eth0",
    CNI_PATH: "/opt/cni/bin",
    ...(call.pod
      ? { CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${call.pod.namespace};K8S_POD_NAME=${call.pod.name}` }
      : {}),
    ...call.env,
  };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const [file, args] = executable ? [executable, []] : [process.execPath, [PLUGIN]];
    const child = spawn(file, args, { env, stdio: ["pipe", "pipe", "inherit"] });
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    let stdout = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (d: string) => {
      stdout += d;
    });
    child.on("error", reject);
    child.on("close", (status) => {
      clearTimeout(timer);
      let json: unknown;
      try {
        json = stdout ? JSON.parse(stdout) : undefined;
      } catch {
        json = undefined;
      }
      resolve({ status, stdout, json, ms: Number(process.hrtime.bigint() - started) / 1e6 });
    });
    child.stdin.end(typeof stdin === "string" ? stdin : JSON.stringify(stdin));
  });
}

/** A kubelet-like network configuration for a chained plugin, with a bridge plugin's result before it. */
export function chainedConfig(ips: string[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    name: "k8s-pod-network",
    type: "ambit-cni",
    ...extra,
    prevResult: {
      cniVersion: "1.0.0",
      interfaces: [{ name: "eth0", sandbox: "/var/run/netns/x", mac: "0a:58:0a:00:00:05" }],
      ips: ips.map((ip) => ({ address: `${ip}/24`, interface: 0, gateway: ip.replace(/\.\d+$/, ".1") })),
      routes: [{ dst: "0.0.0.0/0" }],
      dns: {},
    },
  };
}
