import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, request } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import type { ExecutionContext } from "ava";
import { MeshCa } from "../../../../agent/identity/ca.js";
import type { ApiRequestConfig } from "../../../../agent/kube/api/config.js";
import { servingCredentials } from "../../../kube-api/credentials.js";

/**
 * A stand-in API server for configuration tests: HTTPS on 127.0.0.1 with the test API server's serving
 * certificate (names 127.0.0.1 and kubernetes.default.svc), asking for a client certificate without requiring
 * one, and answering every request with what arrived: Authorization, Impersonate-User, the SNI name and the
 * client certificate's fingerprint. Requests are sent as list-watch sends them: requestOptions() spread into
 * node:https.
 */

export interface Echo {
  authorization?: string;
  impersonateUser?: string;
  servername?: string | false | null;
  clientCertSha256?: string;
}

export interface EchoServer {
  url: string;
  caPem: string;
  port: number;
}

export async function echoServer(t: ExecutionContext): Promise<EchoServer> {
  const creds = await servingCredentials();
  const server = createServer(
    { key: creds.keyPem, cert: creds.certPem, requestCert: true, rejectUnauthorized: false },
    (req, res) => {
      const socket = req.socket as TLSSocket;
      const peer = socket.getPeerX509Certificate();
      const echo: Echo = { servername: socket.servername };
      if (req.headers.authorization) echo.authorization = req.headers.authorization;
      const as = req.headers["impersonate-user"];
      if (typeof as === "string") echo.impersonateUser = as;
      if (peer) echo.clientCertSha256 = peer.fingerprint256;
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(echo));
    },
  );
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const { port } = server.address() as AddressInfo;
  return { url: `https://127.0.0.1:${port}`, caPem: creds.caPem, port };
}

/** One GET with `config`'s options, as api-request.ts sends it (fresh connection, no pooling). */
export async function get(config: ApiRequestConfig, path = "/version"): Promise<Echo> {
  const o = await config.requestOptions();
  return new Promise((resolve, reject) => {
    const req = request(new URL(`${o.server}${path}`), {
      agent: false,
      headers: o.headers,
      ...o.tls,
      ...(o.auth === undefined ? {} : { auth: o.auth }),
      timeout: 5000,
    });
    req.on("timeout", () => req.destroy(new Error("no answer within 5 s")));
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")) as Echo));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

/** A self-signed certificate and key (a fresh CA root): a client certificate, or a CA the server was not issued by. */
export async function selfSigned(): Promise<{ certPem: string; keyPem: string }> {
  return MeshCa.generateRoot("other.test");
}

export async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "ambit-kubecfg-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}
