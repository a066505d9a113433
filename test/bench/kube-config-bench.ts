/**
 * What the agent's API server configuration costs a process (issue 12: an idle agent under 100 MB resident):
 * a fresh `node` loads agent/kube/api/config.js, builds a KubeApiConfig and prepares one request's options, and
 * reports its resident set and CPU. Each configuration runs RUNS times; a further run records the modules loaded,
 * to say whether @kubernetes/client-node came with it.
 *
 * Run alone: `node dist/test/bench/run.js kube-config` (after `make build`).
 */
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileUrl, loadedPackage, runProbe } from "../support/module-probe.js";
import { fixed, pad, tempDir } from "./support.js";

const RUNS = 3;
const CA_PEM =
  "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMBExDzANBgNVBAMMBnRl\n-----END CERTIFICATE-----\n";
const MiB = 1024 * 1024;

interface Case {
  name: string;
  body: string;
}

async function cases(dir: string): Promise<Case[]> {
  const config = JSON.stringify(fileUrl("agent/kube/api/config.js"));
  const ca = Buffer.from(CA_PEM).toString("base64");
  const kubeconfig = (user: string) =>
    [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      "- name: c",
      "  cluster:",
      "    server: https://127.0.0.1:6443",
      `    certificate-authority-data: ${ca}`,
      "users:",
      "- name: u",
      "  user:",
      user,
      "contexts:",
      "- name: x",
      "  context: {cluster: c, user: u}",
      "current-context: x",
      "",
    ].join("\n");
  const plain = join(dir, "token.kubeconfig");
  await writeFile(plain, kubeconfig("    token: bench-token"));
  const plugin = join(dir, "plugin.sh");
  const credential = { apiVersion: "client.authentication.k8s.io/v1", kind: "ExecCredential", status: { token: "t" } };
  await writeFile(plugin, `#!/bin/sh\necho '${JSON.stringify(credential)}'\n`);
  await chmod(plugin, 0o755);
  const exec = join(dir, "exec.kubeconfig");
  await writeFile(
    exec,
    kubeconfig(`    exec: {apiVersion: client.authentication.k8s.io/v1, command: ${plugin}, interactiveMode: Never}`),
  );
  const sa = join(dir, "pod/var/run/secrets/kubernetes.io/serviceaccount");
  await mkdir(sa, { recursive: true });
  await writeFile(join(sa, "token"), "bench-token");
  await writeFile(join(sa, "ca.crt"), CA_PEM);
  const env = JSON.stringify({ KUBERNETES_SERVICE_HOST: "10.96.0.1", KUBERNETES_SERVICE_PORT: "443" });
  const load = `const { KubeApiConfig } = await import(${config});`;
  return [
    { name: "bare node", body: "return null;" },
    {
      name: "--kubeconfig (token)",
      body: `${load} const c = await KubeApiConfig.fromKubeconfig(${JSON.stringify(plain)}); await c.requestOptions(); return c.describe();`,
    },
    {
      name: "--kube (in-cluster)",
      body: `${load} const c = await KubeApiConfig.inCluster({ env: ${env}, fsRoot: ${JSON.stringify(join(dir, "pod"))} }); await c.requestOptions(); return c.describe();`,
    },
    {
      name: "--kubeconfig (exec plugin)",
      body: `${load} const c = await KubeApiConfig.fromKubeconfig(${JSON.stringify(exec)}); await c.requestOptions(); return c.describe();`,
    },
  ];
}

export async function runKubeConfigBench(): Promise<string> {
  const { dir, remove } = tempDir("kube-config");
  try {
    const lines = [
      `${"configuration".padEnd(28)} ${pad("RSS MiB (each run)", 24)} ${pad("max RSS", 8)} ${pad("CPU s", 6)}  client-node loaded`,
    ];
    for (const c of await cases(dir)) {
      const runs = [];
      for (let i = 0; i < RUNS; i++) runs.push(await runProbe(c.body));
      const recorded = await runProbe(c.body, { recordModules: true });
      const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
      lines.push(
        `${c.name.padEnd(28)} ${pad(runs.map((r) => fixed(r.rssBytes / MiB, 1)).join(" "), 24)} ` +
          `${pad(fixed(median(runs.map((r) => r.maxRssBytes)) / MiB, 1), 8)} ` +
          `${pad(fixed(median(runs.map((r) => r.cpuSeconds))), 6)}  ${loadedPackage(recorded.modules, "@kubernetes/client-node") ? "yes" : "no"}`,
      );
    }
    return lines.join("\n");
  } finally {
    remove();
  }
}
