import type { RequestOptions } from "node:https";
import { dirname } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import type { ApiRequestOptions } from "./config.js";
import { KubeApiError } from "./errors.js";

/**
 * Credentials from a kubeconfig user with an `exec` plugin or an `auth-provider` (OIDC, GCP, Azure), which
 * @kubernetes/client-node runs and refreshes. Only such a user loads this module: importing the library costs
 * ~60 MiB resident and ~1 s of CPU (its generated API client comes with it), see config.ts.
 *
 * The library reads the kubeconfig itself (after kubeconfig.ts has checked it) and its applyToHTTPSOptions runs
 * for every request, so what it reads from files and what its plugins refresh is always current.
 */
export function libraryCredentials(
  text: string,
  path: string,
  context: string,
): () => Promise<Omit<ApiRequestOptions, "server">> {
  const kc = new KubeConfig();
  try {
    kc.loadFromString(text);
    kc.makePathsAbsolute(dirname(path));
  } catch (cause) {
    throw new KubeApiError("kubeconfig_invalid", `cannot load kubeconfig ${path}: ${(cause as Error).message}`, {
      cause,
    });
  }
  kc.setCurrentContext(context);
  return async () => {
    const applied: RequestOptions = { headers: {} };
    await kc.applyToHTTPSOptions(applied);
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(applied.headers ?? {})) {
      if (typeof v === "string" || typeof v === "number") headers[k.toLowerCase()] = String(v);
    }
    const tls: ApiRequestOptions["tls"] = {};
    for (const k of ["ca", "cert", "key", "pfx", "passphrase", "servername", "rejectUnauthorized"] as const) {
      if (applied[k] !== undefined) (tls as Record<string, unknown>)[k] = applied[k];
    }
    return typeof applied.auth === "string" ? { tls, headers, auth: applied.auth } : { tls, headers };
  };
}
