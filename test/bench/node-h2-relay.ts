/**
 * A reference for ambit's own HTTP/2, run by proxy-bench as its "node-h2" mode: the same HBONE shape (HTTP/2
 * CONNECT streams over one pooled mutual-TLS session between two relays) built on Node's `node:http2` (nghttp2)
 * and `tls`, with the windows ambit uses. No policy, no metrics. If ambit's data path is not clearly ahead of this,
 * its own HTTP/2 is not paying for itself.
 *
 *   node-h2-relay client PKI_DIR LISTEN_HOST:PORT=PEER_HOST:PEER_PORT/TARGET_HOST:TARGET_PORT ...
 *   node-h2-relay server PKI_DIR LISTEN_HOST:PORT
 * PKI_DIR holds ca.crt and client/server .crt/.key (tools.ts makeTestPki).
 */
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import { join } from "node:path";
import { DEFAULT_TUNING } from "../../agent/proxy/tuning.js";

const SETTINGS = { initialWindowSize: DEFAULT_TUNING.streamWindow, maxFrameSize: 16384 * 64 };

function endpoint(text: string): { host: string; port: number } {
  const at = text.lastIndexOf(":");
  const port = Number(text.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port)) throw new Error(`not HOST:PORT: ${text}`);
  return { host: text.slice(0, at), port };
}

function pki(dir: string, side: "client" | "server") {
  return {
    ca: readFileSync(join(dir, "ca.crt")),
    cert: readFileSync(join(dir, `${side}.crt`)),
    key: readFileSync(join(dir, `${side}.key`)),
  };
}

/** Large session window, as ambit sets it (the default 64 KiB caps a stream at window/RTT). */
function widen(session: http2.Http2Session): void {
  session.setLocalWindowSize(DEFAULT_TUNING.sessionWindow);
}

function client(dir: string, specs: string[]): void {
  for (const spec of specs) {
    const [from, rest = ""] = spec.split("=");
    const [peer = "", target = ""] = rest.split("/");
    const listen = endpoint(from ?? "");
    const remote = endpoint(peer);
    endpoint(target);
    let session: http2.ClientHttp2Session | undefined;
    const pooled = () => {
      if (session && !session.closed && !session.destroyed) return session;
      session = http2.connect(`https://${remote.host}:${remote.port}`, {
        ...pki(dir, "client"),
        servername: "server",
        settings: SETTINGS,
      });
      session.on("error", () => {});
      session.once("connect", (s) => widen(s));
      return session;
    };
    net
      .createServer({ allowHalfOpen: true, noDelay: true }, (app) => {
        const stream = pooled().request({ ":method": "CONNECT", ":authority": target });
        app.on("error", () => stream.close(http2.constants.NGHTTP2_CANCEL));
        stream.on("error", () => app.destroy());
        app.pipe(stream);
        stream.pipe(app);
      })
      .listen({ ...listen, backlog: 4096 });
  }
}

function server(dir: string, listen: string): void {
  const s = http2.createSecureServer({
    ...pki(dir, "server"),
    requestCert: true,
    rejectUnauthorized: true,
    settings: SETTINGS,
  });
  s.on("session", widen);
  s.on("stream", (stream, headers) => {
    if (headers[":method"] !== "CONNECT") {
      stream.respond({ ":status": 405 }, { endStream: true });
      return;
    }
    const upstream = net.connect({ ...endpoint(String(headers[":authority"])), allowHalfOpen: true, noDelay: true });
    upstream.once("connect", () => {
      stream.respond({ ":status": 200 });
      upstream.pipe(stream);
      stream.pipe(upstream);
    });
    upstream.on("error", () => {
      if (!stream.headersSent) stream.respond({ ":status": 503 }, { endStream: true });
      else stream.close(http2.constants.NGHTTP2_CANCEL);
    });
    stream.on("error", () => upstream.destroy());
  });
  s.listen({ ...endpoint(listen), backlog: 4096 });
}

const [role, dir = "", ...rest] = process.argv.slice(2);
if (role === "client") client(dir, rest);
else if (role === "server" && rest[0]) server(dir, rest[0]);
else {
  process.stderr.write("usage: node-h2-relay client PKI LISTEN=PEER/TARGET ... | server PKI LISTEN\n");
  process.exit(2);
}
