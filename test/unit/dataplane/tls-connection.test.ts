import { createHash, randomBytes } from "node:crypto";
import test, { type ExecutionContext } from "ava";
import koffi from "koffi";
import {
  RECORD_BYTES,
  TLS_EOF,
  TLS_EOF_UNCLEAN,
  TLS_WANT_READ,
  TLS_WANT_WRITE,
} from "../../../agent/dataplane/tls/connection.js";
import { TlsContext } from "../../../agent/dataplane/tls/context.js";
import { TlsError } from "../../../agent/dataplane/tls/errors.js";
import { closeFd, SOL_SOCKET, setIntOption } from "../../../native-bindings/io.js";
import { SO_SNDBUF } from "../../../native-bindings/libc.js";
import {
  errDrain,
  opensslVersion,
  pemPrivateKey,
  SSL_ERROR_WANT_READ,
  type SslPtr,
  sslDoHandshake,
  sslFree,
  sslGetError,
  sslNew,
  sslReadEx,
  sslSetConnectState,
  sslWriteEx,
} from "../../../native-bindings/openssl.js";
import { issue, newCa, sid, TD, type Workload } from "../identity/helpers.js";
import {
  contextOf,
  type Fixture,
  handshakeBoth,
  liveObjects,
  openFds,
  type Pair,
  readAll,
  threadWrites,
  tlsPair,
  transfer,
  workloads,
} from "./tls-support.js";

/**
 * Runs `body` and then checks that it left no fd open and no OpenSSL object alive: every test here builds and
 * disposes its own contexts and connections.
 */
async function leakChecked(t: ExecutionContext, body: (f: Fixture) => void | Promise<void>): Promise<void> {
  const f = await workloads();
  const fds = openFds();
  const objects = liveObjects();
  await body(f);
  t.deepEqual(openFds(), fds, "fds opened by the test are all closed");
  t.deepEqual(liveObjects(), objects, "every SSL and SSL_CTX is freed");
  t.deepEqual(objects, { contexts: 0, connections: 0 });
  t.deepEqual(errDrain(), [], "OpenSSL's error queue is left empty");
}

function withPair(serverW: Workload, clientW: Workload, body: (p: Pair) => void, clientBundle?: string): void {
  const serverCtx = contextOf(serverW);
  const clientCtx = contextOf(clientW, clientBundle);
  const pair = tlsPair(serverCtx, clientCtx);
  try {
    body(pair);
  } finally {
    pair.close();
    serverCtx.dispose();
    clientCtx.dispose();
  }
}

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
/** A full TLS 1.3 record on the wire: 5-byte header, 16 KiB, content type, 16-byte AES-GCM tag. */
const FULL_RECORD = RECORD_BYTES + 22;

test.serial("binds Node's own OpenSSL from the running executable", (t) => {
  t.true(opensslVersion().startsWith(`OpenSSL ${process.versions.openssl}`), opensslVersion());
});

test.serial("mTLS over a socketpair: both handshakes finish, ALPN h2, data both ways, SPIFFE IDs of both peers", (t) =>
  leakChecked(t, ({ db, cart }) => {
    withPair(db, cart, (p) => {
      const { server, client } = handshakeBoth(p);
      t.deepEqual(server, { step: "done" });
      t.deepEqual(client, { step: "done" });
      t.is(p.server.alpn(), "h2");
      t.is(p.client.alpn(), "h2");
      t.false(p.client.sessionReused());
      t.deepEqual(p.server.peerIdentity(), { ok: true, id: sid("shop", "cart") });
      t.deepEqual(p.client.peerIdentity(), { ok: true, id: sid("shop", "db") });

      t.is(p.client.write(Buffer.from("GET /cart")), 9);
      t.is(String(readAll(p.server).data), "GET /cart");
      t.is(p.server.write(Buffer.from("200 OK")), 6);
      const back = readAll(p.client);
      t.is(String(back.data), "200 OK");
      t.is(back.end, TLS_WANT_READ, "the server's session tickets were consumed on the way, nothing else pending");
    });
  }),
);

test.serial("a client certificate from a foreign CA is refused by the server; the client sees it on first read", (t) =>
  leakChecked(t, ({ db, foreign }) => {
    // The client trusts the server's CA, so only the server's judgement fails.
    withPair(
      db,
      foreign,
      (p) => {
        const { server, client } = handshakeBoth(p);
        t.true("error" in server);
        const serverError = (server as { error: TlsError }).error;
        t.is(serverError.code, "tls_handshake");
        t.regex(serverError.message, /certificate verify failed/);
        // TLS 1.3: the client finished its part before the server judged its certificate.
        t.deepEqual(client, { step: "done" });
        const err = t.throws(() => readAll(p.client), { instanceOf: TlsError });
        t.is(err?.code, "tls_protocol");
        t.regex(err?.message ?? "", /unknown ca/);
      },
      db.bundlePem,
    );
  }),
);

test.serial("a server certificate from a foreign CA fails the client's handshake", (t) =>
  leakChecked(t, ({ foreign, cart }) => {
    withPair(
      foreign,
      cart,
      (p) => {
        const { client } = handshakeBoth(p);
        t.true("error" in client);
        const err = (client as { error: TlsError }).error;
        t.is(err.code, "tls_handshake");
        t.regex(err.message, /certificate verify failed/);
      },
      cart.bundlePem,
    );
  }),
);

test.serial("several MiB each way: writes wait for the socket (TLS_WANT_WRITE) and every byte arrives in order", (t) =>
  leakChecked(t, ({ db, cart }) => {
    withPair(db, cart, (p) => {
      handshakeBoth(p);
      const up = randomBytes(6 * 1024 * 1024);
      const sent = transfer(p.client, p.server, up);
      t.is(sent.received.length, up.length);
      t.is(sha(sent.received), sha(up));
      t.true(sent.writeWaits > 0, "the socketpair filled up at least once");
      const down = randomBytes(5 * 1024 * 1024 + 17);
      const back = transfer(p.server, p.client, down, 1 << 20);
      t.is(sha(back.received), sha(down));
      t.true(back.writeWaits > 0);
    });
  }),
);

test.serial(
  "records leave together: 8 records in one write(2), 4 MiB in fewer than a quarter as many as records",
  (t) =>
    leakChecked(t, ({ db, cart }) => {
      withPair(db, cart, (p) => {
        handshakeBoth(p);
        readAll(p.client);
        const piece = randomBytes(8 * RECORD_BYTES);
        const before = threadWrites();
        t.is(p.client.write(piece), piece.length);
        const after = threadWrites();
        t.is(after.calls - before.calls, 1, "one write(2)");
        t.is(after.bytes - before.bytes, 8 * FULL_RECORD, "carrying 8 whole records");
        t.is(p.client.unsentBytes, 0);
        t.is(sha(readAll(p.server).data), sha(piece));

        const data = randomBytes(4 * 1024 * 1024);
        const records = data.length / RECORD_BYTES;
        const start = threadWrites();
        const sent = transfer(p.client, p.server, data, 1 << 20);
        const calls = threadWrites().calls - start.calls;
        t.is(sha(sent.received), sha(data));
        t.true(calls * 4 < records, `${calls} write(2) for ${records} records`);
      });
    }),
);

test.serial(
  "coalesced ciphertext a small socket buffer only partly takes is held, sent first, and arrives whole and in order",
  (t) =>
    leakChecked(t, ({ db, cart }) => {
      withPair(db, cart, (p) => {
        handshakeBoth(p);
        readAll(p.client);
        setIntOption(p.clientFd, SOL_SOCKET, SO_SNDBUF, 4096);
        const data = randomBytes(1024 * 1024 + 333);
        const first = 16 * RECORD_BYTES;
        const before = threadWrites();
        t.is(p.client.write(data, first), first, "16 records' plaintext taken");
        const after = threadWrites();
        t.is(after.calls - before.calls, 1);
        const took = after.bytes - before.bytes;
        t.true(took > 0 && took < 16 * FULL_RECORD, `a partial write(2): ${took} bytes`);
        t.is(p.client.unsentBytes, 16 * FULL_RECORD - took, "the rest is held");
        t.is(p.client.write(data.subarray(first)), TLS_WANT_WRITE, "nothing more is taken while it waits");
        t.is(p.client.flush(), TLS_WANT_WRITE, "the socket is still full");

        // A slow reader: 1000 bytes at a time, the writer flushing and writing in between.
        const got: Buffer[] = [];
        let received = 0;
        let sent = first;
        const buf = Buffer.alloc(1000);
        let waits = 0;
        for (let step = 0; received < data.length; step++) {
          if (step > 200_000) return t.fail(`stalled at ${received}`);
          if (p.client.unsentBytes > 0) {
            if (p.client.flush() < 0) waits++;
          } else if (sent < data.length) {
            const n = p.client.write(data.subarray(sent), data.length - sent);
            if (n > 0) sent += n;
          }
          const n = p.server.read(buf);
          if (n > 0) {
            got.push(Buffer.from(buf.subarray(0, n)));
            received += n;
          }
        }
        t.true(waits > 10, `the writer waited for the reader (${waits} times)`);
        t.is(p.client.unsentBytes, 0);
        t.true(Buffer.concat(got).equals(data), "every byte, in order");
      });
    }),
);

/** SSL_set_fd and SSL_key_update, for a plain OpenSSL peer of this test file only. */
const peerLib = koffi.load(null);
const SSL_set_fd = peerLib.func("int SSL_set_fd(void *ssl, int fd)");
const SSL_key_update = peerLib.func("int SSL_key_update(void *ssl, int updatetype)");
const SSL_KEY_UPDATE_REQUESTED = 1;

test.serial("a KeyUpdate the peer requests is answered ahead of our next record, in the same write(2)", (t) =>
  leakChecked(t, ({ db, cart }) => {
    const serverCtx = contextOf(db);
    const clientCtx = contextOf(cart);
    const p = tlsPair(serverCtx, clientCtx);
    // The client end as OpenSSL writes it by itself (socket BIO): the peer that sends the KeyUpdate.
    const peer = sslNew(clientCtx.pointer()) as SslPtr;
    const count = Buffer.alloc(8);
    try {
      t.is(SSL_set_fd(peer, p.clientFd), 1);
      sslSetConnectState(peer);
      let peerDone = false;
      let serverStep = "want_read";
      for (let i = 0; i < 50 && !(peerDone && serverStep === "done"); i++) {
        if (!peerDone) peerDone = sslDoHandshake(peer) === 1;
        if (serverStep !== "done") serverStep = p.server.handshake();
      }
      t.true(peerDone);
      t.is(serverStep, "done");
      t.is(SSL_key_update(peer, SSL_KEY_UPDATE_REQUESTED), 1);
      t.is(sslWriteEx(peer, Buffer.from("rekeyed"), 7, count), 1, "KeyUpdate, then data under the new key");

      const got = Buffer.alloc(64);
      t.is(p.server.read(got), 7);
      t.is(got.toString("latin1", 0, 7), "rekeyed");
      // OpenSSL answers a KeyUpdate request with its next record (tls_process_key_update only notes it).
      t.is(p.server.unsentBytes, 0);
      const before = threadWrites();
      t.is(p.server.write(Buffer.from("reply")), 5);
      const after = threadWrites();
      t.is(after.calls - before.calls, 1);
      // Each record: header 5, content type 1, tag 16, and a 5-byte KeyUpdate message or the 5-byte reply.
      t.is(after.bytes - before.bytes, 2 * 27, "our KeyUpdate and the reply, in one write(2)");

      // The reply is under our new key: the peer reads it only if our KeyUpdate reached it first.
      const reply = Buffer.alloc(64);
      let n = 0;
      for (let i = 0; i < 10 && n === 0; i++) {
        const ret = sslReadEx(peer, reply, reply.length, count);
        if (ret === 1) n = count.readUInt32LE(0);
        else t.is(sslGetError(peer, ret), SSL_ERROR_WANT_READ, "the peer only waits (session tickets first)");
      }
      t.is(reply.toString("latin1", 0, n), "reply");
    } finally {
      sslFree(peer);
      p.close();
      serverCtx.dispose();
      clientCtx.dispose();
    }
  }),
);

test.serial(
  "records OpenSSL already holds are reported by hasPending(), so a reader never waits on epoll for them",
  (t) =>
    leakChecked(t, ({ db, cart }) => {
      withPair(db, cart, (p) => {
        handshakeBoth(p);
        readAll(p.client);
        for (const word of ["one", "two", "three"]) p.client.write(Buffer.from(word));
        const first = Buffer.alloc(3);
        t.is(p.server.read(first), 3);
        // The first record is consumed whole, yet read-ahead pulled the next two out of the socket with it: epoll
        // would not wake for them.
        t.true(p.server.hasPending());
        const rest = readAll(p.server);
        t.is(`${first}${rest.data}`, "onetwothree");
        t.is(rest.end, TLS_WANT_READ);
        t.false(p.server.hasPending());
      });
    }),
);

test.serial(
  "a stale error on the thread's OpenSSL queue (left by other code) does not turn a wait into a failure",
  (t) =>
    leakChecked(t, ({ db, cart }) => {
      withPair(db, cart, (p) => {
        handshakeBoth(p);
        readAll(p.client);
        // SSL_get_error reports SSL_ERROR_SSL whenever the queue holds anything: as if Node's crypto had failed a
        // moment before on this thread. A failed PEM parse leaves such an error behind.
        t.is(pemPrivateKey("not a key"), null);
        t.is(p.server.read(Buffer.alloc(64)), TLS_WANT_READ);
        t.is(pemPrivateKey("not a key"), null);
        t.is(p.client.write(Buffer.from("fine")), 4);
        t.is(pemPrivateKey("not a key"), null);
        t.is(String(readAll(p.server).data), "fine");
      });
    }),
);

test.serial("clean shutdown: close_notify reads as TLS_EOF, and the other direction stays open until its own", (t) =>
  leakChecked(t, ({ db, cart }) => {
    withPair(db, cart, (p) => {
      handshakeBoth(p);
      p.client.write(Buffer.from("last words"));
      t.is(p.client.shutdown(), "done");
      const got = readAll(p.server);
      t.is(String(got.data), "last words");
      t.is(got.end, TLS_EOF);
      // TLS 1.3 half-close: the server may still answer after the client's close_notify.
      t.is(p.server.write(Buffer.from("reply")), 5);
      t.is(p.server.shutdown(), "done");
      const reply = readAll(p.client);
      t.is(String(reply.data), "reply");
      t.is(reply.end, TLS_EOF);
    });
  }),
);

test.serial("bare EOF (TCP FIN without close_notify) reads as TLS_EOF_UNCLEAN after the data, not as an error", (t) =>
  leakChecked(t, ({ db, cart }) => {
    const serverCtx = contextOf(db);
    const clientCtx = contextOf(cart);
    const p = tlsPair(serverCtx, clientCtx);
    handshakeBoth(p);
    p.client.write(Buffer.from("cut short"));
    // Unread data at close makes the kernel send a reset instead of a FIN: take the server's session tickets first.
    t.is(readAll(p.client).end, TLS_WANT_READ);
    p.client.free();
    closeFd(p.clientFd);
    const got = readAll(p.server);
    t.is(String(got.data), "cut short");
    t.is(got.end, TLS_EOF_UNCLEAN);
    t.is(p.server.shutdown(), "done", "no close_notify after a fatal end (OpenSSL forbids it)");
    p.server.free();
    closeFd(p.serverFd);
    serverCtx.dispose();
    clientCtx.dispose();
  }),
);

test.serial("a peer reset mid-stream is a typed tls_io/tls_protocol error, not a crash", (t) =>
  leakChecked(t, ({ db, cart }) => {
    const serverCtx = contextOf(db);
    const clientCtx = contextOf(cart);
    const p = tlsPair(serverCtx, clientCtx);
    handshakeBoth(p);
    readAll(p.client);
    p.server.free();
    closeFd(p.serverFd);
    const err = t.throws(
      () => {
        for (let i = 0; i < 1000; i++) p.client.write(Buffer.alloc(16384));
      },
      { instanceOf: TlsError },
    );
    t.is(err?.code, "tls_io");
    t.is(err?.errno, 32, "EPIPE");
    p.client.free();
    closeFd(p.clientFd);
    serverCtx.dispose();
    clientCtx.dispose();
  }),
);

test.serial(
  "a peer gone during the handshake (after its ClientHello) fails the server's handshake with a typed error",
  (t) =>
    leakChecked(t, ({ db, cart }) => {
      const serverCtx = contextOf(db);
      const clientCtx = contextOf(cart);
      const p = tlsPair(serverCtx, clientCtx);
      t.is(p.client.handshake(), "want_read", "ClientHello sent");
      t.is(p.server.handshake(), "want_read", "ServerHello..Finished sent, waiting for the client's Finished");
      p.client.free();
      closeFd(p.clientFd);
      const err = t.throws(() => p.server.handshake(), { instanceOf: TlsError });
      t.true(err?.code === "tls_handshake" || err?.code === "tls_io", err?.code);
      t.regex(err?.message ?? "", /unexpected eof|ECONNRESET|peer closed/);
      p.server.free();
      closeFd(p.serverFd);
      serverCtx.dispose();
      clientCtx.dispose();
    }),
);

test.serial("both ends close at once: each sends close_notify, each reads the other's as TLS_EOF", (t) =>
  leakChecked(t, ({ db, cart }) => {
    withPair(db, cart, (p) => {
      handshakeBoth(p);
      t.is(p.client.shutdown(), "done");
      t.is(p.server.shutdown(), "done");
      t.is(readAll(p.server).end, TLS_EOF);
      t.is(readAll(p.client).end, TLS_EOF);
    });
  }),
);

test.serial("free and dispose happen once; a connection outlives its disposed context; use after free is typed", (t) =>
  leakChecked(t, ({ db, cart }) => {
    const serverCtx = contextOf(db);
    const clientCtx = contextOf(cart);
    const p = tlsPair(serverCtx, clientCtx);
    serverCtx.dispose();
    clientCtx.dispose();
    serverCtx.dispose();
    t.true(serverCtx.disposed);
    t.throws(() => serverCtx.pointer(), { instanceOf: TlsError, message: /after dispose/ });
    // OpenSSL's own reference keeps the SSL_CTX alive for connections made before a rotation.
    t.deepEqual(handshakeBoth(p), { server: { step: "done" }, client: { step: "done" } });
    t.deepEqual(p.server.peerIdentity(), { ok: true, id: sid("shop", "cart") });
    p.client.write(Buffer.from("still here"));
    t.is(String(readAll(p.server).data), "still here");
    t.throws(() => p.server.read(Buffer.alloc(16), 17), { instanceOf: RangeError }, "never past the Buffer's end");
    t.throws(() => p.client.write(Buffer.alloc(16), 17), { instanceOf: RangeError });
    p.close();
    p.close();
    t.true(p.server.freed);
    const err = t.throws(() => p.server.read(Buffer.alloc(16)), { instanceOf: TlsError });
    t.is(err?.code, "tls_closed");
  }),
);

test.serial("a context refuses a key that does not match its certificate, and unparseable PEM, with a reason", (t) =>
  leakChecked(t, ({ db, cart }) => {
    const mismatch = t.throws(
      () =>
        TlsContext.create({
          chainPem: db.chainPem,
          keyPem: cart.keys.privateKeyPem,
          bundlePem: db.bundlePem,
          trustDomain: TD,
        }),
      { instanceOf: TlsError },
    );
    t.is(mismatch?.code, "tls_context");
    t.regex(mismatch?.message ?? "", /private key refused: .*key values mismatch/);
    const noCert = t.throws(
      () =>
        TlsContext.create({
          chainPem: "junk",
          keyPem: db.keys.privateKeyPem,
          bundlePem: db.bundlePem,
          trustDomain: TD,
        }),
      { instanceOf: TlsError },
    );
    t.regex(noCert?.message ?? "", /certificate chain holds no certificate/);
    const noKey = t.throws(
      () => TlsContext.create({ chainPem: db.chainPem, keyPem: "junk", bundlePem: db.bundlePem, trustDomain: TD }),
      { instanceOf: TlsError },
    );
    t.regex(noKey?.message ?? "", /private key cannot be parsed/);
  }),
);

test.serial(
  "peer identity runs the project's SPIFFE validation: a peer from another trust domain is named as such",
  (t) =>
    leakChecked(t, async ({ db }) => {
      const other = await newCa(3600, "other.example");
      const stranger = await issue(other, sid("shop", "cart", "other.example"));
      // The server trusts the stranger's root too, so OpenSSL accepts the chain and only the SPIFFE check refuses.
      const serverCtx = contextOf(db, db.bundlePem + stranger.bundlePem);
      const clientCtx = contextOf(stranger, db.bundlePem);
      const p = tlsPair(serverCtx, clientCtx);
      try {
        t.deepEqual(handshakeBoth(p), { server: { step: "done" }, client: { step: "done" } });
        const v = p.server.peerIdentity();
        t.false(v.ok);
        t.is((v as { reason: string }).reason, "wrong_trust_domain");
      } finally {
        p.close();
        serverCtx.dispose();
        clientCtx.dispose();
      }
    }),
);
