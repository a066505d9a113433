/**
 * HBONE's session over real mTLS, two ways, in one process: a client and a server H2Session over loopback TCP with
 * TLS 1.3 (AES-128-GCM, client certificate required, ALPN h2), carrying the workloads of h2-session-bench.ts:
 *   "node":    Node's `tls` sockets and SocketTransport (today's HBONE path)
 *   "reactor": TlsTransport (OpenSSL over the fd through koffi) on a Reactor driven by the main thread's libuv loop
 * Each run is a child process of its own; the figure is its whole-process CPU (user + sys of every thread, from
 * process.cpuUsage) from the first connect to the last byte. Runs alternate between the two, `rounds` times.
 *
 *   node dist/test/bench/tls-h2-bench.js [bulk MiB | streams COUNT | all] [rounds]   (default: all, 3 rounds;
 *                                                                                     bulk 1024 MiB, 100000 streams)
 *   node dist/test/bench/tls-h2-bench.js run <node|reactor> <bulk|streams> <arg> <material.json>   (one run)
 *
 * Not part of `make bench`: a focused measure for the data path's TLS transport.
 *
 * Measured 2026-12-01 on the shared 2-core machine (load average 5-8), 3 alternating rounds, whole-process CPU:
 *   bulk 1 GiB, one stream:        node 2.02-2.16 s, reactor 2.25-2.33 s (sys 0.64-0.69 vs 0.81-0.91)
 *   100,000 streams, 64 at a time: node 1.97-2.05 s, reactor 1.84-1.87 s
 * (an earlier run on a busier machine: bulk node 2.16-2.82, reactor 2.19-2.87; streams node 1.99-2.54, reactor
 * 1.66-2.42: the order within a round mattered more than the implementation). Syscalls for 256 MiB bulk (strace -f
 * -c): reactor 20,650 write + 16,850 read + 3,700 epoll_pwait, node 782 write + 7,025 read + 316 epoll_pwait. The
 * reactor paid one write(2) per 16 KiB TLS record (SSL_set_fd's socket BIO writes each record at once) where Node
 * writes many records per syscall from its memory BIO: that was its extra sys time on bulk. A larger OpenSSL read
 * buffer (SSL_CTX_set_default_read_buffer_len 128 KiB) cut reads 4x but did not lower CPU measurably.
 *
 * Since the reactor writes through a memory BIO too (tls/connection.ts), 2026-12-01, load average 2-4, 3 rounds:
 *   bulk 1 GiB:               node 1.62-1.73 s, reactor 1.42-1.54 s (sys 0.40-0.52 vs node's 0.43-0.50)
 *   100,000 streams:          node 1.33-1.43 s, reactor 1.20 s
 * and 256 MiB bulk takes 1,320 write(2) + 17,000 read(2).
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { Listener } from "../../agent/dataplane/listener.js";
import { Reactor } from "../../agent/dataplane/reactor.js";
import { WorkerCounters } from "../../agent/dataplane/shared-counters.js";
import { TlsContext } from "../../agent/dataplane/tls/context.js";
import { TlsTransport } from "../../agent/dataplane/tls-transport.js";
import { H2Session } from "../../agent/h2/session.js";
import { SocketTransport } from "../../agent/h2/socket-transport.js";
import type { H2Stream } from "../../agent/h2/stream.js";
import { MeshCa } from "../../agent/identity/ca.js";
import { createCsrPem } from "../../agent/identity/csr.js";
import { generateRsaKeyPair } from "../../agent/identity/keys.js";
import { formatSpiffeId, type SpiffeId } from "../../agent/identity/spiffe.js";
import { MESH_TLS } from "../../agent/identity/tls-policy.js";
import { AF_INET, connect, EINPROGRESS, getsockname, tcpSocket } from "../../native-bindings/io.js";
import { decodeSockaddr, encodeSockaddr } from "../../native-bindings/sockaddr.js";
import { openListenerFd } from "../../native-bindings/sockets.js";
import { bulk, H2_BENCH_SETTINGS, type Pair, streams } from "./h2-workloads.js";

const TD = "cluster.local";
/** The proxy's windows (agent/proxy/tuning.ts defaults), so flow control runs as it does in HBONE. */
const settings = H2_BENCH_SETTINGS;
const HANDSHAKE_TIMEOUT_MS = 10_000;

type Impl = "node" | "reactor";
type Mode = "bulk" | "streams";
interface Material {
  server: { key: string; cert: string; ca: string };
  client: { key: string; cert: string; ca: string };
}
async function nodePair(m: Material, onStream: (stream: H2Stream) => void): Promise<Pair> {
  let server: H2Session | undefined;
  const listener = tls.createServer(
    {
      ...MESH_TLS,
      key: m.server.key,
      cert: m.server.cert,
      ca: m.server.ca,
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ["h2"],
    },
    (sock) => {
      sock.setNoDelay(true);
      server = new H2Session(new SocketTransport(sock), { role: "server", settings });
      server.on("stream", onStream);
    },
  );
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const sock = tls.connect({
    port: (listener.address() as { port: number }).port,
    host: "127.0.0.1",
    secureContext: tls.createSecureContext({ ...MESH_TLS, key: m.client.key, cert: m.client.cert, ca: m.client.ca }),
    ALPNProtocols: ["h2"],
    servername: "hbone",
    // The chain is verified; SPIFFE certificates carry no host name to check.
    checkServerIdentity: () => undefined,
  });
  sock.setNoDelay(true);
  await new Promise<void>((resolve, reject) => {
    sock.once("secureConnect", resolve);
    sock.once("error", reject);
  });
  const client = new H2Session(new SocketTransport(sock), { role: "client", settings });
  return {
    client,
    close: () => {
      client.destroy();
      server?.destroy();
      listener.close();
    },
  };
}

async function reactorPair(m: Material, onStream: (stream: H2Stream) => void): Promise<Pair> {
  const context = (w: Material["server"]) =>
    TlsContext.create({ chainPem: w.cert, keyPem: w.key, bundlePem: w.ca, trustDomain: TD });
  const serverCtx = context(m.server);
  const clientCtx = context(m.client);
  const reactor = new Reactor();
  const lfd = openListenerFd({ address: "127.0.0.1", port: 0 });
  let listener: Listener | undefined;
  const accepted = new Promise<number>((resolve) => {
    listener = new Listener(reactor, lfd, WorkerCounters.standalone(), resolve);
  });
  const fd = tcpSocket(AF_INET);
  const r = connect(fd, encodeSockaddr("127.0.0.1", decodeSockaddr(getsockname(lfd)).port));
  if (r < 0 && r !== -EINPROGRESS) throw new Error(`connect failed (${-r})`);
  const clientT = TlsTransport.open({
    reactor,
    context: clientCtx,
    fd,
    role: "client",
    handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
  });
  const sfd = await accepted;
  listener?.close();
  const serverT = TlsTransport.open({
    reactor,
    context: serverCtx,
    fd: sfd,
    role: "server",
    handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
  });
  const server = new H2Session(await serverT, { role: "server", settings });
  server.on("stream", onStream);
  const client = new H2Session(await clientT, { role: "client", settings });
  return {
    client,
    close: () => {
      client.destroy();
      server.destroy();
      serverCtx.dispose();
      clientCtx.dispose();
      void reactor.close();
    },
  };
}

async function runOne(impl: Impl, mode: Mode, arg: number, materialPath: string): Promise<void> {
  const m = JSON.parse(readFileSync(materialPath, "utf8")) as Material;
  const pair = (onStream: (s: H2Stream) => void) =>
    impl === "node" ? nodePair(m, onStream) : reactorPair(m, onStream);
  const before = process.cpuUsage();
  const wall = performance.now();
  if (mode === "bulk") await bulk(pair, arg);
  else await streams(pair, arg);
  const cpu = process.cpuUsage(before);
  console.log(JSON.stringify({ user: cpu.user / 1e6, sys: cpu.system / 1e6, wall: (performance.now() - wall) / 1000 }));
}

async function issue(ca: MeshCa, who: SpiffeId): Promise<Material["server"]> {
  const keys = await generateRsaKeyPair();
  const issued = ca.signCsr(createCsrPem(keys, formatSpiffeId(who)), who);
  return { key: keys.privateKeyPem, cert: issued.certChainPem, ca: issued.trustBundlePem };
}

async function drive(which: string, argText: string | undefined, rounds: number): Promise<void> {
  const ca = new MeshCa(await MeshCa.generateRoot(TD), { trustDomain: TD, leafLifetimeSec: 3600 });
  const material: Material = {
    server: await issue(ca, { trustDomain: TD, namespace: "bench", serviceAccount: "server" }),
    client: await issue(ca, { trustDomain: TD, namespace: "bench", serviceAccount: "client" }),
  };
  const dir = mkdtempSync(join(tmpdir(), "tls-h2-bench-"));
  const path = join(dir, "material.json");
  writeFileSync(path, JSON.stringify(material), { mode: 0o600 });
  const modes: [Mode, number][] = [];
  if (which === "bulk" || which === "all") modes.push(["bulk", Number(which === "bulk" ? (argText ?? 1024) : 1024)]);
  if (which === "streams" || which === "all") {
    modes.push(["streams", Number(which === "streams" ? (argText ?? 100_000) : 100_000)]);
  }
  const results = new Map<string, number[]>();
  try {
    for (const [mode, arg] of modes) {
      for (let round = 0; round < rounds; round++) {
        // Alternate which goes first, so neither always runs on a cooler (or warmer) machine.
        const order: Impl[] = round % 2 === 0 ? ["node", "reactor"] : ["reactor", "node"];
        for (const impl of order) {
          const out = execFileSync(
            process.execPath,
            [fileURLToPath(import.meta.url), "run", impl, mode, String(arg), path],
            {
              encoding: "utf8",
            },
          );
          const r = JSON.parse(out.trim().split("\n").pop() as string) as { user: number; sys: number; wall: number };
          const cpu = r.user + r.sys;
          const key = `${mode} ${impl}`;
          results.set(key, [...(results.get(key) ?? []), cpu]);
          console.log(
            `${mode} ${arg} round ${round + 1} ${impl.padEnd(7)}: cpu ${cpu.toFixed(2)} s (user ${r.user.toFixed(2)}, ` +
              `sys ${r.sys.toFixed(2)}), wall ${r.wall.toFixed(2)} s`,
          );
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  for (const [key, cpus] of results) {
    console.log(
      `${key}: cpu ${Math.min(...cpus).toFixed(2)}-${Math.max(...cpus).toFixed(2)} s over ${cpus.length} runs`,
    );
  }
}

const [first, ...rest] = process.argv.slice(2);
if (first === "run") {
  const [impl, mode, arg, path] = rest;
  if ((impl !== "node" && impl !== "reactor") || (mode !== "bulk" && mode !== "streams") || !path) {
    throw new Error("usage: tls-h2-bench run <node|reactor> <bulk|streams> <arg> <material.json>");
  }
  await runOne(impl, mode, Number(arg), path);
} else {
  const which = first ?? "all";
  if (!["bulk", "streams", "all"].includes(which))
    throw new Error("usage: tls-h2-bench [bulk MiB | streams COUNT | all] [rounds]");
  await drive(which, which === "all" ? undefined : rest[0], Number((which === "all" ? rest[0] : rest[1]) ?? 3));
}
