import { once } from "node:events";
import { connect, createServer, type TLSSocket } from "node:tls";
import test, { type ExecutionContext } from "ava";
import { TLS_EOF, TlsConnection, type TlsStep } from "../../../agent/dataplane/tls/connection.js";
import type { TlsContext } from "../../../agent/dataplane/tls/context.js";
import { TlsError } from "../../../agent/dataplane/tls/errors.js";
import { validateTlsPeer } from "../../../agent/identity/validate.js";
import { accept, closeFd, connect as connectFd, EINPROGRESS } from "../../../native-bindings/io.js";
import { AF_INET, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_STREAM, socket } from "../../../native-bindings/libc.js";
import { encodeSockaddr } from "../../../native-bindings/sockaddr.js";
import { openListenerFd } from "../../../native-bindings/sockets.js";
import { issue, newCa, sid, TD, type Workload } from "../identity/helpers.js";
import { contextOf, liveObjects, localPort, openFds, pollUntil } from "./tls-support.js";

/** Real TLS both ways over loopback TCP: Node's own `tls` on one end, OpenSSL through koffi on the other. */

let fixture: Promise<{ db: Workload; cart: Workload }> | undefined;
function workloads() {
  fixture ??= newCa().then(async (ca) => {
    const [db, cart] = await Promise.all([issue(ca, sid("shop", "db")), issue(ca, sid("shop", "cart"))]);
    return { db, cart };
  });
  return fixture;
}

// SPIFFE certificates carry no DNS name: identity is checked on the SPIFFE ID instead of the host name.
const noHostnameCheck = () => undefined;

async function leakChecked(t: ExecutionContext, body: (f: { db: Workload; cart: Workload }) => Promise<void>) {
  const f = await workloads();
  const fds = openFds();
  await body(f);
  t.deepEqual(openFds(), fds, "fds opened by the test are all closed");
  t.deepEqual(liveObjects(), { contexts: 0, connections: 0 }, "every SSL and SSL_CTX is freed");
}

/** One connection accepted by a koffi listener fd and handshaken by OpenSSL: its outcome, for a Node client. */
async function opensslServerOnce(
  ctx: TlsContext,
  startClient: (port: number) => TLSSocket,
  afterHandshake: (conn: TlsConnection) => Promise<void>,
  refused = false,
): Promise<{ server: TlsStep | TlsError; client: TLSSocket }> {
  const lfd = openListenerFd({ address: "127.0.0.1", port: 0 });
  let fd = -1;
  let conn: TlsConnection | undefined;
  const client = startClient(localPort(lfd));
  const closed = new Promise((resolve) => client.once("close", resolve));
  const ended = new Promise((resolve) => {
    client.once("close", resolve);
    client.once("error", resolve);
  });
  try {
    fd = await pollUntil(() => {
      const r = accept(lfd, null);
      return r >= 0 ? r : undefined;
    });
    const c = new TlsConnection(ctx, fd, "server");
    conn = c;
    const server = await pollUntil<TlsStep | TlsError>(() => {
      try {
        return c.handshake() === "done" ? "done" : undefined;
      } catch (err) {
        if (err instanceof TlsError) return err;
        throw err;
      }
    });
    if (server === "done") await afterHandshake(c);
    return { server, client };
  } finally {
    // A refused client is left to read the alert and close by itself (within the liveness bound).
    if (refused) await Promise.race([ended, new Promise((r) => setTimeout(r, 5000))]);
    client.destroy();
    await closed;
    conn?.free();
    if (fd >= 0) closeFd(fd);
    closeFd(lfd);
  }
}

/** Reads from an OpenSSL connection until `bytes` arrived (or the peer ended). */
function readUntil(conn: TlsConnection, bytes: number): Promise<string> {
  const buf = Buffer.alloc(4096);
  let text = "";
  return pollUntil(() => {
    for (;;) {
      const n = conn.read(buf);
      if (n > 0) text += buf.toString("latin1", 0, n);
      if (n === TLS_EOF || text.length >= bytes) return text;
      if (n < 0) return undefined;
    }
  });
}

test.serial("Node tls client -> OpenSSL server: mTLS, h2, SPIFFE IDs both ways, data both ways", (t) =>
  leakChecked(t, async ({ db, cart }) => {
    const ctx = contextOf(db);
    let clientSaw: ReturnType<typeof validateTlsPeer> | undefined;
    const answer: string[] = [];
    const { server } = await opensslServerOnce(
      ctx,
      (port) => {
        const s = connect({
          host: "127.0.0.1",
          port,
          key: cart.keys.privateKeyPem,
          cert: cart.chainPem,
          ca: cart.bundlePem,
          ALPNProtocols: ["h2"],
          checkServerIdentity: noHostnameCheck,
        });
        s.on("secureConnect", () => {
          clientSaw = validateTlsPeer(s, { trustDomain: TD, trustBundle: cart.bundlePem, peerRole: "server" });
          t.is(s.alpnProtocol, "h2");
          t.is(s.getProtocol(), "TLSv1.3");
          s.write("ping from node");
        });
        s.on("data", (d: Buffer) => answer.push(String(d)));
        s.on("error", () => {});
        return s;
      },
      async (conn) => {
        t.deepEqual(conn.peerIdentity(), { ok: true, id: sid("shop", "cart") });
        t.is(conn.alpn(), "h2");
        t.is(await readUntil(conn, 14), "ping from node");
        t.is(conn.write(Buffer.from("pong from openssl")), 17);
        await pollUntil(() => (answer.join("").length >= 17 ? true : undefined));
      },
    );
    ctx.dispose();
    t.is(server, "done");
    t.deepEqual(clientSaw, { ok: true, id: sid("shop", "db") });
    t.is(answer.join(""), "pong from openssl");
  }),
);

test.serial("a Node client without a certificate is refused: the server names why, the client sees alert 116", (t) =>
  leakChecked(t, async ({ db, cart }) => {
    const ctx = contextOf(db);
    let clientError: NodeJS.ErrnoException | undefined;
    let secure = false;
    const { server, client } = await opensslServerOnce(
      ctx,
      (port) => {
        const s = connect({ host: "127.0.0.1", port, ca: cart.bundlePem, checkServerIdentity: noHostnameCheck });
        s.on("secureConnect", () => {
          secure = true;
        });
        s.on("error", (err) => {
          clientError = err;
        });
        return s;
      },
      async () => {},
      true,
    );
    ctx.dispose();
    t.true(server instanceof TlsError);
    t.is((server as TlsError).code, "tls_handshake");
    t.regex((server as TlsError).message, /peer did not return a certificate/);
    await pollUntil(() => clientError ?? (client.destroyed ? true : undefined));
    t.true(secure, "TLS 1.3: the client's handshake completed before the server judged it");
    t.is(clientError?.code, "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED");
  }),
);

test.serial("a TLS 1.2-only Node client is refused with a protocol_version alert", (t) =>
  leakChecked(t, async ({ db, cart }) => {
    const ctx = contextOf(db);
    let clientError: NodeJS.ErrnoException | undefined;
    const { server } = await opensslServerOnce(
      ctx,
      (port) =>
        connect({
          host: "127.0.0.1",
          port,
          key: cart.keys.privateKeyPem,
          cert: cart.chainPem,
          ca: cart.bundlePem,
          maxVersion: "TLSv1.2",
          checkServerIdentity: noHostnameCheck,
        }).on("error", (err) => {
          clientError = err;
        }),
      async () => {},
      true,
    );
    ctx.dispose();
    t.true(server instanceof TlsError);
    t.regex((server as TlsError).message, /unsupported protocol/);
    await pollUntil(() => clientError);
    t.is(clientError?.code, "ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION");
  }),
);

test.serial("OpenSSL client -> Node tls server (requestCert, rejectUnauthorized): mTLS, h2, data both ways", (t) =>
  leakChecked(t, async ({ db, cart }) => {
    const serverSaw: unknown[] = [];
    const server = createServer(
      {
        key: db.keys.privateKeyPem,
        cert: db.chainPem,
        ca: db.bundlePem,
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: "TLSv1.3",
        ALPNProtocols: ["h2"],
      },
      (s: TLSSocket) => {
        serverSaw.push(validateTlsPeer(s, { trustDomain: TD, trustBundle: db.bundlePem, peerRole: "client" }));
        serverSaw.push(s.alpnProtocol);
        s.on("data", (d: Buffer) => s.end(`echo: ${d}`));
        s.on("error", () => {});
      },
    );
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const port = (server.address() as { port: number }).port;
    const ctx = contextOf(cart);
    const fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC);
    const conn = new TlsConnection(ctx, fd, "client");
    try {
      t.is(connectFd(fd, encodeSockaddr("127.0.0.1", port)), -EINPROGRESS);
      await pollUntil(() => (conn.handshake() === "done" ? true : undefined));
      t.deepEqual(conn.peerIdentity(), { ok: true, id: sid("shop", "db") });
      t.is(conn.alpn(), "h2");
      t.is(conn.write(Buffer.from("hello")), 5);
      t.is(await readUntil(conn, 11), "echo: hello");
      t.deepEqual(serverSaw, [{ ok: true, id: sid("shop", "cart") }, "h2"]);
    } finally {
      conn.free();
      closeFd(fd);
      ctx.dispose();
      server.close();
      await once(server, "close");
    }
  }),
);

test.serial("ALPN: a client offering only http/1.1 is refused (alert 120); one offering none gets no protocol", (t) =>
  leakChecked(t, async ({ db, cart }) => {
    const ctx = contextOf(db);
    const base = {
      host: "127.0.0.1",
      key: cart.keys.privateKeyPem,
      cert: cart.chainPem,
      ca: cart.bundlePem,
      checkServerIdentity: noHostnameCheck,
    };
    let clientError: NodeJS.ErrnoException | undefined;
    const refused = await opensslServerOnce(
      ctx,
      (port) =>
        connect({ ...base, port, ALPNProtocols: ["http/1.1"] }).on("error", (err) => {
          clientError = err;
        }),
      async () => {},
      true,
    );
    t.true(refused.server instanceof TlsError);
    t.regex((refused.server as TlsError).message, /no application protocol/);
    await pollUntil(() => clientError);
    t.is(clientError?.code, "ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL");

    let alpn: string | undefined;
    const plain = await opensslServerOnce(
      ctx,
      (port) => connect({ ...base, port }).on("error", () => {}),
      async (conn) => {
        alpn = conn.alpn();
      },
    );
    ctx.dispose();
    t.is(plain.server, "done");
    t.is(alpn, "");
  }),
);
