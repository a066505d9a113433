import { once } from "node:events";
import { createServer, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { connect, createSecureContext, type SecureContext, TLSSocket } from "node:tls";
import { pathToFileURL } from "node:url";
import { MeshCa } from "../../agent/identity/ca.js";
import { createCsrPem } from "../../agent/identity/csr.js";
import { generateRsaKeyPair } from "../../agent/identity/keys.js";
import { formatSpiffeId, type SpiffeId } from "../../agent/identity/spiffe.js";

/**
 * Identity costs: certificate issuance (native keygen + forge CSR + CA sign) and a full mTLS handshake on
 * loopback, with a SecureContext built once per identity (what CertManager does) versus one built per connection.
 */

const TD = "cluster.local";
const ISSUANCES = 50;
const HANDSHAKES = 500;

function stats(samples: number[]): { median: number; p99: number } {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))] as number;
  return { median: at(0.5), p99: at(0.99) };
}

const ms = (v: number) => `${v.toFixed(2)} ms`.padStart(10);

interface Material {
  key: string;
  cert: string;
  ca: string;
}

async function issue(ca: MeshCa, id: SpiffeId): Promise<Material & { keygenMs: number; totalMs: number }> {
  const t0 = performance.now();
  const keys = await generateRsaKeyPair();
  const t1 = performance.now();
  const issued = ca.signCsr(createCsrPem(keys, formatSpiffeId(id)), id);
  return {
    key: keys.privateKeyPem,
    cert: issued.certChainPem,
    ca: issued.trustBundlePem,
    keygenMs: t1 - t0,
    totalMs: performance.now() - t0,
  };
}

async function handshakes(server: Material, client: Material, reuse: boolean): Promise<number[]> {
  const ctx = (m: Material) => createSecureContext({ key: m.key, cert: m.cert, ca: m.ca });
  const serverCtx = ctx(server);
  const clientCtx = ctx(client);
  const srv = createServer((raw: Socket) => {
    const secureContext: SecureContext = reuse ? serverCtx : ctx(server);
    const tls = new TLSSocket(raw, { isServer: true, secureContext, requestCert: true, rejectUnauthorized: false });
    tls.on("error", () => tls.destroy());
    tls.on("secure", () => tls.end());
  });
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const port = (srv.address() as { port: number }).port;
  const samples: number[] = [];
  try {
    for (let i = 0; i < HANDSHAKES; i++) {
      const t0 = performance.now();
      const sock = connect({
        host: "127.0.0.1",
        port,
        secureContext: reuse ? clientCtx : ctx(client),
        rejectUnauthorized: false,
      });
      await once(sock, "secureConnect");
      samples.push(performance.now() - t0);
      sock.destroy();
    }
  } finally {
    srv.close();
  }
  return samples;
}

export async function runIdentityBench(): Promise<string> {
  const ca = new MeshCa(await MeshCa.generateRoot(TD), { trustDomain: TD });
  const id = { trustDomain: TD, namespace: "bench", serviceAccount: "a" };
  const total: number[] = [];
  const keygen: number[] = [];
  for (let i = 0; i < ISSUANCES; i++) {
    const r = await issue(ca, id);
    total.push(r.totalMs);
    keygen.push(r.keygenMs);
  }
  const csrAndSign = total.map((v, i) => v - (keygen[i] as number));
  const a = await issue(ca, id);
  const b = await issue(ca, { ...id, serviceAccount: "b" });
  await handshakes(b, a, true); // warm-up: JIT, first-use OpenSSL tables
  const reused = stats(await handshakes(b, a, true));
  const fresh = stats(await handshakes(b, a, false));
  const t = stats(total);
  const k = stats(keygen);
  const c = stats(csrAndSign);
  const lines = [
    `identity bench (node ${process.version}, RSA-2048)`,
    `certificate issuance, ${ISSUANCES} runs           median     p99`,
    `  keygen (native, async)              ${ms(k.median)} ${ms(k.p99)}`,
    `  CSR + CA sign (forge, native RSA)   ${ms(c.median)} ${ms(c.p99)}`,
    `  total                               ${ms(t.median)} ${ms(t.p99)}`,
    `mTLS handshake on loopback, ${HANDSHAKES} each     median     p99`,
    `  reused SecureContext                ${ms(reused.median)} ${ms(reused.p99)}`,
    `  new SecureContext per connection    ${ms(fresh.median)} ${ms(fresh.p99)}`,
    `  ratio new/reused                    ${`${(fresh.median / reused.median).toFixed(2)}x`.padStart(10)} ${`${(fresh.p99 / reused.p99).toFixed(2)}x`.padStart(10)}`,
  ];
  return lines.join("\n");
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(await runIdentityBench());
}
