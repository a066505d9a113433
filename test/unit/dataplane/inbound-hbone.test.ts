import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { connect as tlsConnect } from "node:tls";
import test, { type ExecutionContext } from "ava";
import { HboneServer } from "../../../agent/dataplane/inbound-hbone.js";
import { Listener } from "../../../agent/dataplane/listener.js";
import type { PodDial } from "../../../agent/dataplane/pod-socket.js";
import { WorkerCounters } from "../../../agent/dataplane/shared-counters.js";
import type { TlsContext } from "../../../agent/dataplane/tls/context.js";
import { TlsTransport } from "../../../agent/dataplane/tls-transport.js";
import { H2Session } from "../../../agent/h2/session.js";
import { formatSpiffeId } from "../../../agent/identity/spiffe.js";
import type { AuthorizationPolicyRecord } from "../../../agent/kube/records.js";
import { AgentMetrics } from "../../../agent/metrics/agent-metrics.js";
import { observers, type ProxyObserver } from "../../../agent/proxy/observer.js";
import type { HboneTuning } from "../../../agent/proxy/tuning.js";
import type { LocalWorkload, WorkloadIndex } from "../../../agent/proxy/workload-index.js";
import { AF_INET, accept, closeFd, connect, EINPROGRESS, read, tcpSocket } from "../../../native-bindings/io.js";
import { encodeSockaddr } from "../../../native-bindings/sockaddr.js";
import { openListenerFd } from "../../../native-bindings/sockets.js";
import { capturingLogger } from "../../support/log-lines.js";
import { within } from "../../support/within.js";
import { sid } from "../identity/helpers.js";
import {
  localWorkload,
  loopbackSockets,
  meshIndex,
  meshWorkload,
  RecordingObserver,
  testContext,
} from "./support/dataplane-context.js";
import { type LeakChecked, runLeakChecked } from "./support/leak-checked.js";
import { closeOf, connectTo, dial, type Exchange, exchange, SETTINGS } from "./support/tls-sessions.js";
import { localPort } from "./tls-support.js";

/**
 * The inbound HBONE server on a Reactor, end to end on loopback without root: HBONE clients made of a TlsTransport
 * and an H2Session on the same Reactor (or Node TLS clients for what those cannot do), a Node TCP server as the app.
 *
 * The pod's IP is 10.0.0.1 and the test's socket factory routes it to 127.0.0.1: the server refuses a CONNECT to a
 * loopback address (loopback_destination) before it would dial it, so a pod at 127.0.0.1 could never be reached.
 */
const POD_IP = "10.0.0.1";

/**
 * The cluster as the server's workload index has it by default: the HBONE clients' outer address (127.0.0.1) is a
 * pod of shop/cart, whose identity the clients' certificate carries.
 */
const CART_AT_LOOPBACK = meshIndex(meshWorkload("cart", "cart", "127.0.0.1"));

/** Resolves once `check` holds (polled every 10 ms); rejects after `ms`, naming `what`. */
async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(10);
  }
}

interface TcpEntry {
  localPort: number;
  remotePort: number;
  /** 1 ESTABLISHED, 2 SYN_SENT ... (include/net/tcp_states.h). */
  state: number;
  /** The kernel's timer on it: 1 retransmit, 2 keepalive, 0 none. */
  timer: number;
  /** Clock ticks (1/100 s) until the timer fires. */
  ticks: number;
}

/** The IPv4 TCP sockets of this namespace, as /proc/net/tcp shows them. */
function tcpEntries(): TcpEntry[] {
  const port = (address = "") => Number.parseInt(address.split(":")[1] ?? "", 16);
  return readFileSync("/proc/net/tcp", "utf8")
    .split("\n")
    .slice(1)
    .filter((line) => line.trim())
    .map((line) => {
      const f = line.trim().split(/\s+/);
      const [timer = "", ticks = ""] = (f[5] ?? "").split(":");
      return {
        localPort: port(f[1]),
        remotePort: port(f[2]),
        state: Number.parseInt(f[3] ?? "", 16),
        timer: Number.parseInt(timer, 16),
        ticks: Number.parseInt(ticks, 16),
      };
    });
}

const ESTABLISHED = 1;
const SYN_SENT = 2;
const KEEPALIVE_TIMER = 2;

interface Rig extends LeakChecked {
  server: HboneServer;
  pod: LocalWorkload;
  observer: RecordingObserver;
  /** Dials the server made for the pod, as it asked for them (before the test's route). */
  dials: PodDial[];
  /** The port the server's listener accepts on (the pod's 15008). */
  port: number;
  /** The client's TLS context (cart's certificate, the mesh's trust bundle). */
  cartTls: TlsContext;
  /** An app server on 127.0.0.1; closed after the test. */
  app(onConnection: (s: Socket) => void): Promise<{ port: number; sockets: Socket[] }>;
  /** Routes the pod's `port` somewhere else on loopback. */
  route(port: number, to: number): void;
}

interface RigOptions {
  tuning?: Partial<HboneTuning>;
  podIps?: string[];
  /** The pod has a TLS context (a valid certificate); default true. */
  identity?: boolean;
  log?: ReturnType<typeof capturingLogger>["logger"];
  /** AuthorizationPolicies in force, read per connection: the test edits the map to change policy. */
  authorizationPolicies?: Map<string, AuthorizationPolicyRecord>;
  /** The cluster's meshed workloads; default CART_AT_LOOPBACK. */
  index?: WorkloadIndex;
  /** Told what the server reports, besides the rig's RecordingObserver (the agent's metrics, say). */
  observer?: ProxyObserver;
}

/**
 * Runs `body` against an HboneServer for pod shop/db at 10.0.0.1 on a Reactor of its own, accepting on a loopback
 * listener. After the body: the listener is closed and every fd the test opened must be closed again, with no
 * handler left in the reactor, no SSL object alive, and nothing live in the server; then the reactor's own fds go.
 */
function withServer(t: ExecutionContext, options: RigOptions, body: (rig: Rig) => Promise<void>): Promise<void> {
  t.timeout(15_000);
  return runLeakChecked(
    t,
    (base) => {
      const { reactor, context } = base;
      const basePod = localWorkload("db", "db", POD_IP);
      const pod: LocalWorkload = options.podIps
        ? { ...basePod, pod: { ...basePod.pod, ips: options.podIps } }
        : basePod;
      t.deepEqual(pod.id, sid("shop", "db"));
      const tlsContexts = new Map<string, TlsContext>();
      if (options.identity ?? true) tlsContexts.set(formatSpiffeId(pod.id), context(base.db));
      const routes = new Map<number, number>();
      const sockets = loopbackSockets((dst) =>
        dst.address === POD_IP ? { address: "127.0.0.1", port: routes.get(dst.port) ?? dst.port } : dst,
      );
      const observer = new RecordingObserver();
      const ctx = testContext(reactor, {
        observer: options.observer ? observers(observer, options.observer) : observer,
        sockets: sockets.factory,
        tlsContexts,
        index: options.index ?? CART_AT_LOOPBACK,
        ...(options.tuning ? { tuning: options.tuning } : {}),
        ...(options.log ? { log: options.log } : {}),
        ...(options.authorizationPolicies ? { authorizationPolicies: options.authorizationPolicies } : {}),
      });
      const server = new HboneServer(ctx, pod);
      const lfd = openListenerFd({ address: "127.0.0.1", port: 0 });
      const listener = new Listener(reactor, lfd, WorkerCounters.standalone(), (fd) => server.accept(fd));
      const apps: Server[] = [];
      const app = async (onConnection: (s: Socket) => void) => {
        const sockets: Socket[] = [];
        const s = createServer((socket) => {
          sockets.push(socket);
          onConnection(socket);
        });
        apps.push(s);
        s.listen(0, "127.0.0.1");
        await once(s, "listening");
        return { port: (s.address() as { port: number }).port, sockets };
      };
      return {
        world: {
          ...base,
          server,
          pod,
          observer,
          dials: sockets.dials,
          port: localPort(lfd),
          cartTls: context(base.cart),
          app,
          route: (port, to) => routes.set(port, to),
        },
        release: () => {
          listener.close();
          for (const s of apps) s.close();
        },
        destroy: () => server.destroy(),
        live: () => server.live,
      };
    },
    body,
  );
}

interface Client {
  session: H2Session;
  closed: Promise<Error | undefined>;
}

/** An HBONE client on the rig's reactor: mTLS with `tls`, then an HTTP/2 session. */
async function hboneClient(rig: Rig, tls = rig.cartTls): Promise<Client> {
  const transport = await TlsTransport.open({
    reactor: rig.reactor,
    context: tls,
    fd: dial(rig.port),
    role: "client",
    handshakeTimeoutMs: 5000,
  });
  const session = new H2Session(transport, { role: "client", settings: SETTINGS });
  return { session, closed: closeOf(session) };
}

/** A Node socket's close, bounded (its errors are expected: the server refuses it). */
function closeOfSocket(s: Socket, what: string): Promise<void> {
  s.on("error", () => {});
  const closed = new Promise<void>((resolve) => {
    if (s.destroyed) resolve();
    else s.once("close", () => resolve());
  });
  return within(closed, 5000, what);
}

test.serial(
  "CONNECT to the pod's app: 200, bytes both ways, observer sees opened and closed from the source's side, named by the cluster's records",
  (t) =>
    withServer(t, { tuning: { peerTimeoutMs: 6000 } }, async (rig) => {
      const toApp = randomBytes(1000);
      const fromApp = randomBytes(3000);
      const appGot: Buffer[] = [];
      let appSaw: Promise<Buffer> = Promise.resolve(Buffer.alloc(0));
      const app = await rig.app((s) => {
        appSaw = new Promise((resolve) => {
          s.on("data", (c: Buffer) => appGot.push(c));
          s.on("end", () => {
            resolve(Buffer.concat(appGot));
            s.end();
          });
        });
        s.write(fromApp);
      });
      const client = await hboneClient(rig);
      // Baggage that lies: the source is named from the workload index, by its address and proven identity.
      const x = connectTo(client.session, `${POD_IP}:${app.port}`, [
        ["baggage", "k8s.namespace.name=bank,k8s.workload.name=teller,k8s.pod.name=teller-1"],
      ]);
      t.is(await within(x.status, 5000, "status"), "200");
      x.stream.write(toApp);
      x.stream.end();
      const body = await within(x.body, 5000, "the app's bytes and end");
      t.true(body.equals(fromApp), "every byte of the app reached the client");
      t.true((await within(appSaw, 5000, "the client's bytes at the app")).equals(toApp));
      t.is(await within(x.closed, 5000, "stream close"), undefined, "ended both ways, no reset");
      await until(() => rig.observer.closed.length === 1, "connection closed report");

      t.deepEqual(rig.observer.results("server"), ["ok"]);
      t.deepEqual(
        rig.dials,
        [{ address: POD_IP, port: app.port, source: "127.0.0.1" }],
        "dialled the pod's IP as asked, from the tunnel's outer address (the caller the app sees)",
      );
      t.deepEqual(rig.observer.refused, []);
      t.is(rig.observer.opened.length, 1);
      const info = rig.observer.opened[0];
      t.like(info, {
        reporter: "destination",
        tls: true,
        pod: "shop/db",
        source: {
          workload: "cart",
          namespace: "shop",
          principal: formatSpiffeId(sid("shop", "cart")),
          ip: "127.0.0.1",
        },
        destination: { workload: "db", namespace: "shop", principal: formatSpiffeId(sid("shop", "db")), ip: POD_IP },
      });
      t.is(info?.destination.port, app.port);
      const closed = rig.observer.closed[0];
      t.is(closed?.info, info);
      t.is(closed?.end.sent, toApp.length, "sent: source -> destination");
      t.is(closed?.end.received, fromApp.length, "received: destination -> source");
      t.is(closed?.end.error, undefined);

      // The accepted connection watches its peer (peer-timeout.ts): keepalive after a third of 6 s idle.
      let accepted: TcpEntry | undefined;
      await until(() => {
        accepted = tcpEntries().find((e) => e.localPort === rig.port && e.state === ESTABLISHED);
        return accepted?.timer === KEEPALIVE_TIMER;
      }, "keepalive timer on the server's connection");
      t.true((accepted?.ticks ?? 1000) <= 200, `keepalive in ${accepted?.ticks} ticks`);

      client.session.close();
      t.is(await within(client.closed, 5000, "client session close"), undefined);
    }),
);

test.serial("refusals: 405 not CONNECT, 400 bad authority, 403 wrong destination, agent port, loopback", (t) =>
  withServer(t, { podIps: [POD_IP, "127.0.0.1"] }, async (rig) => {
    const app = await rig.app(() => {});
    const client = await hboneClient(rig);
    const cases: { headers: [string, string][]; status: string; reason: string }[] = [
      {
        headers: [
          [":method", "GET"],
          [":scheme", "https"],
          [":authority", `${POD_IP}:${app.port}`],
          [":path", "/"],
        ],
        status: "405",
        reason: "not_connect",
      },
      {
        headers: [
          [":method", "CONNECT"],
          [":authority", `db.shop:${app.port}`],
        ],
        status: "400",
        reason: "bad_authority",
      },
      {
        headers: [
          [":method", "CONNECT"],
          [":authority", `${POD_IP}:0`],
        ],
        status: "400",
        reason: "bad_authority",
      },
      {
        headers: [
          [":method", "CONNECT"],
          [":authority", "10.0.0.2:80"],
        ],
        status: "403",
        reason: "wrong_destination",
      },
      {
        headers: [
          [":method", "CONNECT"],
          [":authority", `${POD_IP}:15001`],
        ],
        status: "403",
        reason: "agent_port",
      },
      {
        headers: [
          [":method", "CONNECT"],
          [":authority", `${POD_IP}:15006`],
        ],
        status: "403",
        reason: "agent_port",
      },
      {
        headers: [
          [":method", "CONNECT"],
          [":authority", `${POD_IP}:15008`],
        ],
        status: "403",
        reason: "agent_port",
      },
      // One of the pod's IPs, and the app listens there: refused before any dial all the same.
      {
        headers: [
          [":method", "CONNECT"],
          [":authority", `127.0.0.1:${app.port}`],
        ],
        status: "403",
        reason: "loopback_destination",
      },
    ];
    for (const c of cases) {
      const x = exchange(client.session, c.headers);
      t.is(await within(x.status, 5000, c.reason), c.status, c.reason);
      t.is(x.received(), 0);
      x.stream.end();
      t.is(await within(x.closed, 5000, `${c.reason} close`), undefined);
    }
    t.deepEqual(
      rig.observer.refused,
      cases.map((c) => ({ pod: "shop/db", direction: "inbound", reason: c.reason })),
    );
    t.deepEqual(rig.dials, [], "nothing was dialled");
    t.is(app.sockets.length, 0);
    t.deepEqual(rig.observer.opened, []);
    client.session.close();
    await within(client.closed, 5000, "client session close");
  }),
);

test.serial("the app refuses the connection: 503 upstream_refused, the app socket closed", (t) =>
  withServer(t, {}, async (rig) => {
    const probe = openListenerFd({ address: "127.0.0.1", port: 0 });
    const closedPort = localPort(probe);
    closeFd(probe);
    const client = await hboneClient(rig);
    const x = connectTo(client.session, `${POD_IP}:${closedPort}`);
    t.is(await within(x.status, 5000, "status"), "503");
    x.stream.end();
    await within(x.closed, 5000, "stream close");
    t.deepEqual(rig.observer.refused, [{ pod: "shop/db", direction: "inbound", reason: "upstream_refused" }]);
    t.deepEqual(rig.dials, [{ address: POD_IP, port: closedPort, source: "127.0.0.1" }]);
    t.deepEqual(rig.observer.opened, []);
    client.session.close();
    await within(client.closed, 5000, "client session close");
  }),
);

test.serial(
  "AuthorizationPolicy: a denied CONNECT gets 401 and the app sees nothing; the next stream sees a change",
  (t) => {
    const policies = new Map<string, AuthorizationPolicyRecord>();
    const allowOnly = (principal: string): AuthorizationPolicyRecord => ({
      name: "db-allow",
      namespace: "shop",
      createdAt: "",
      action: "ALLOW",
      rules: [{ from: [{ source: { principals: [principal] } }] }],
    });
    return withServer(t, { authorizationPolicies: policies }, async (rig) => {
      let appConnections = 0;
      const app = await rig.app((s) => {
        appConnections++;
        s.end();
      });
      const client = await hboneClient(rig);
      const authority = `${POD_IP}:${app.port}`;

      policies.set("shop/db-allow", allowOnly("cluster.local/ns/shop/sa/web"));
      const denied = connectTo(client.session, authority);
      t.is(await within(denied.status, 5000, "status"), "401");
      denied.stream.end();
      await within(denied.closed, 5000, "denied stream close");
      t.is(appConnections, 0, "the app never saw the denied connection");
      t.deepEqual(rig.dials, [], "nothing was dialled for it");
      t.is(rig.observer.denied.length, 1);
      t.like(rig.observer.denied[0], {
        info: {
          source: { principal: formatSpiffeId(sid("shop", "cart")) },
          destination: { port: app.port },
          tls: true,
        },
        denial: { policy: "allow_unmatched", reason: "allow_unmatched" },
      });

      // An ALLOW that names the cart, then a DENY of the app's port: new streams of the same session see each change.
      policies.set("shop/db-allow", allowOnly("*/sa/cart"));
      const allowed = connectTo(client.session, authority);
      t.is(await within(allowed.status, 5000, "status"), "200");
      allowed.stream.end();
      await within(allowed.closed, 5000, "allowed stream close");
      t.is(appConnections, 1);
      policies.set("shop/deny-port", {
        name: "deny-port",
        namespace: "shop",
        createdAt: "",
        action: "DENY",
        rules: [{ to: [{ operation: { ports: [String(app.port)] } }] }],
      });
      const deniedAgain = connectTo(client.session, authority);
      t.is(await within(deniedAgain.status, 5000, "status"), "401");
      deniedAgain.stream.end();
      await within(deniedAgain.closed, 5000, "stream close");
      t.like(rig.observer.denied[1], { denial: { policy: "shop/deny-port", reason: "deny_matched", rule: 0 } });
      t.is(appConnections, 1);
      client.session.close();
      await within(client.closed, 5000, "client session close");
    });
  },
);

/** Lets only `principal` in: any other peer's CONNECT is denied (401) with the policy "allow_unmatched". */
function allowOnly(principal: string): Map<string, AuthorizationPolicyRecord> {
  const policy: AuthorizationPolicyRecord = {
    name: "db-allow",
    namespace: "shop",
    createdAt: "",
    action: "ALLOW",
    rules: [{ from: [{ source: { principals: [principal] } }] }],
  };
  return new Map([["shop/db-allow", policy]]);
}

test.serial(
  "a peer that is not the workload the cluster has at its address is source unknown, whatever its baggage",
  (t) =>
    withServer(
      t,
      {
        // 127.0.0.1 is a pod of shop/web, with web's identity; the client proves cart's.
        index: meshIndex(meshWorkload("web-1", "web", "127.0.0.1")),
        authorizationPolicies: allowOnly("cluster.local/ns/shop/sa/web"),
      },
      async (rig) => {
        const client = await hboneClient(rig);
        const x = connectTo(client.session, `${POD_IP}:8080`, [
          ["baggage", "k8s.namespace.name=shop,k8s.workload.name=web,k8s.pod.name=web-1"],
        ]);
        t.is(await within(x.status, 5000, "status"), "401");
        x.stream.end();
        await within(x.closed, 5000, "stream close");
        t.deepEqual(rig.observer.denied[0]?.info.source, {
          workload: "unknown",
          namespace: "unknown",
          principal: formatSpiffeId(sid("shop", "cart")),
          ip: "127.0.0.1",
        });
        client.session.close();
        await within(client.closed, 5000, "client session close");
      },
    ),
);

/** Series in a Prometheus exposition: its lines that are not comments. */
async function seriesOf(metrics: AgentMetrics): Promise<string[]> {
  return (await metrics.registry.metrics()).split("\n").filter((line) => line !== "" && !line.startsWith("#"));
}

test.serial(
  "10,000 CONNECTs with distinct hostile baggage and authorities: the agent's series stay a small constant",
  (t) => {
    const metrics = new AgentMetrics({ defaultMetrics: false });
    t.teardown(() => metrics.close());
    // Denied, so that each CONNECT reports a connection with its source labels and never needs an app socket.
    return withServer(
      t,
      { observer: metrics, authorizationPolicies: allowOnly("cluster.local/ns/shop/sa/web") },
      async (rig) => {
        const client = await hboneClient(rig);
        const TOTAL = 10_000;
        const BATCH = 200;
        // Half reach the policy (401) with their source labels; the rest are refused on their authority first.
        const ask = (i: number): { authority: string; status: string } => {
          if (i % 4 === 0) return { authority: `evil-${i}.example:${1 + (i % 9999)}`, status: "400" };
          if (i % 4 === 1) return { authority: `10.9.${(i >> 8) & 255}.${i & 255}:80`, status: "403" };
          return { authority: `${POD_IP}:${1024 + i}`, status: "401" };
        };
        let first: string[] = [];
        for (let start = 0; start < TOTAL; start += BATCH) {
          const batch = Array.from({ length: BATCH }, (_, k) => {
            const i = start + k;
            const x = connectTo(client.session, ask(i).authority, [
              ["baggage", `k8s.namespace.name=ns-${i},k8s.workload.name=evil-${i},k8s.pod.name=evil-${i}-pod`],
            ]);
            return { x, wanted: ask(i).status };
          });
          const statuses = await within(Promise.all(batch.map((b) => b.x.status)), 5000, `answers from ${start}`);
          t.deepEqual(
            statuses,
            batch.map((b) => b.wanted),
          );
          for (const { x } of batch) x.stream.end();
          await within(Promise.all(batch.map((b) => b.x.closed)), 5000, `closes from ${start}`);
          if (start === 0) first = await seriesOf(metrics);
        }
        t.is(rig.observer.denied.length, TOTAL / 2);
        const last = await seriesOf(metrics);
        t.deepEqual(
          last.map((l) => l.replace(/ [^ ]+$/, "")),
          first.map((l) => l.replace(/ [^ ]+$/, "")),
        );
        // 45 today: histogram buckets and the few label sets these CONNECTs make, the same after 200 as after 10,000.
        t.true(last.length <= 50, `${last.length} series`);
        t.is(metrics.trafficSeries, 1, "one source/destination pair: the index's cart to db");
        t.false(/evil|ns-\d/.test(await metrics.registry.metrics()), "no peer-supplied value in any label");
        const opened = await metrics.registry.getSingleMetric("istio_tcp_connections_opened_total")?.get();
        t.like(opened?.values[0], {
          labels: { source_workload: "cart", source_workload_namespace: "shop", response_flags: "DENY" },
          value: TOTAL / 2,
        });
        client.session.close();
        await within(client.closed, 5000, "client session close");
      },
    );
  },
);

/**
 * A loopback listener whose accept queue is full (backlog 0, one connection never accepted): a connect to it waits
 * in SYN_SENT, its SYNs dropped, until the queue has room. `free()` accepts the filler connection and closes it.
 */
function fullListener(): { port: number; lfd: number; free(): void; close(): void } {
  const lfd = openListenerFd({ address: "127.0.0.1", port: 0, backlog: 0 });
  const port = localPort(lfd);
  const filler = tcpSocket(AF_INET);
  const r = connect(filler, encodeSockaddr("127.0.0.1", port));
  if (r !== 0 && r !== -EINPROGRESS) throw new Error(`filler connect failed: ${-r}`);
  let fillerOpen = true;
  const free = () => {
    const fd = accept(lfd, null);
    if (fd >= 0) closeFd(fd);
    if (fillerOpen) closeFd(filler);
    fillerOpen = false;
  };
  return {
    port,
    lfd,
    free,
    close: () => {
      if (fillerOpen) closeFd(filler);
      fillerOpen = false;
      closeFd(lfd);
    },
  };
}

test.serial("an app connect that does not finish in time: 503 upstream_error, its socket closed", (t) =>
  withServer(t, { tuning: { handshakeTimeoutMs: 500 } }, async (rig) => {
    const full = fullListener();
    try {
      rig.route(8080, full.port);
      const client = await hboneClient(rig);
      const started = Date.now();
      const x = connectTo(client.session, `${POD_IP}:8080`);
      t.is(await within(x.status, 5000, "status"), "503");
      t.true(Date.now() - started >= 450, "answered once the connect timed out");
      x.stream.end();
      await within(x.closed, 5000, "stream close");
      t.deepEqual(rig.observer.refused, [{ pod: "shop/db", direction: "inbound", reason: "upstream_error" }]);
      client.session.close();
      await within(client.closed, 5000, "client session close");
    } finally {
      full.close();
    }
  }),
);

test.serial("the stream is reset while the app connect is under way: the app connection is closed once made", (t) =>
  withServer(t, {}, async (rig) => {
    const full = fullListener();
    try {
      rig.route(8080, full.port);
      const client = await hboneClient(rig);
      const x = connectTo(client.session, `${POD_IP}:8080`);
      await until(() => rig.dials.length === 1, "the server's dial");
      x.stream.reset();
      // The RST_STREAM reaches the server long before the connect's SYN is sent again (1 s).
      await sleep(100);
      full.free();
      let appFd = -1;
      await until(
        () => {
          appFd = accept(full.lfd, null);
          return appFd >= 0;
        },
        "the server's connection at the app",
        5000,
      );
      const buf = Buffer.alloc(16);
      let n = -1;
      try {
        await until(() => {
          n = read(appFd, buf, buf.length);
          return n >= 0;
        }, "the server's close of the app connection");
      } finally {
        closeFd(appFd);
      }
      t.is(n, 0, "EOF: the server closed it without sending anything");
      t.deepEqual(rig.observer.opened, []);
      t.deepEqual(rig.observer.refused, []);
      client.session.close();
      await within(client.closed, 5000, "client session close");
    } finally {
      full.close();
    }
  }),
);

test.serial(
  "handshake refusals: foreign CA (unknown_ca), no client certificate (no_certificate), no h2, silence; each reason recorded",
  (t) => {
    const captured = capturingLogger("info");
    return withServer(t, { tuning: { handshakeTimeoutMs: 300 }, log: captured.logger }, async (rig) => {
      // A client certificate from a foreign CA (the client trusts the mesh's, so its own handshake may finish).
      const foreign = TlsTransport.open({
        reactor: rig.reactor,
        context: rig.context(rig.foreign, rig.db.bundlePem),
        fd: dial(rig.port),
        role: "client",
        handshakeTimeoutMs: 5000,
      });
      await until(() => rig.observer.handshakes.length === 1, "foreign CA refused");
      const settled = await within(
        foreign.then(
          (tr) => tr,
          () => undefined,
        ),
        5000,
        "foreign client's handshake",
      );
      settled?.destroy();

      // No client certificate at all (a Node client).
      const bare = tlsConnect({
        host: "127.0.0.1",
        port: rig.port,
        ca: rig.db.bundlePem,
        ALPNProtocols: ["h2"],
        checkServerIdentity: () => undefined,
      });
      bare.on("error", () => {});
      await closeOfSocket(bare, "no-certificate client closed");
      await until(() => rig.observer.handshakes.length === 2, "no certificate refused");

      // A valid mesh certificate, but no ALPN: TLS succeeds, the HBONE check refuses it.
      const noAlpn = tlsConnect({
        host: "127.0.0.1",
        port: rig.port,
        ca: rig.db.bundlePem,
        cert: rig.cart.chainPem,
        key: rig.cart.keys.privateKeyPem,
        checkServerIdentity: () => undefined,
      });
      noAlpn.on("error", () => {});
      await closeOfSocket(noAlpn, "no-ALPN client closed");
      await until(() => rig.observer.handshakes.length === 3, "no ALPN refused");

      // A TCP connection that never says anything.
      const silent = tcpConnect({ host: "127.0.0.1", port: rig.port });
      silent.on("error", () => {});
      await closeOfSocket(silent, "silent client closed");
      await until(() => rig.observer.handshakes.length === 4, "silent client timed out");

      t.deepEqual(rig.observer.results("server"), ["unknown_ca", "no_certificate", "bad_alpn", "timeout"]);
      const timeout = rig.observer.handshakes[3];
      t.true((timeout?.seconds ?? 0) >= 0.25, `timed out after ${timeout?.seconds} s`);
      const lines = captured.lines.filter((l) => l.listener === "hbone");
      t.like(
        lines.find((l) => l.reason === "bad_alpn"),
        {
          pod: "shop/db",
          msg: "inbound HBONE peer refused; connection closed",
          detail: "ALPN none",
          peer: "127.0.0.1",
        },
      );
      t.like(
        lines.find((l) => l.reason === "timeout"),
        { msg: "inbound HBONE handshake failed; connection closed" },
      );
      t.is(lines.filter((l) => l.reason === "unknown_ca" || l.reason === "no_certificate").length, 2);
      t.deepEqual(rig.observer.opened, []);

      // Anyone can fail handshakes at will: 30 more silent ones are counted each, but logged once an interval.
      const more = Array.from({ length: 30 }, () => {
        const s = tcpConnect({ host: "127.0.0.1", port: rig.port });
        s.on("error", () => {});
        return closeOfSocket(s, "silent client closed");
      });
      await within(Promise.all(more), 5000, "30 silent clients timed out");
      await until(() => rig.observer.handshakes.length === 34, "30 more timeouts counted");
      t.is(captured.lines.filter((l) => l.listener === "hbone" && l.reason === "timeout").length, 1);
    });
  },
);

test.serial(
  "one source address holds at most handshakesPerSource unfinished handshakes; more are closed at once, others unaffected",
  (t) =>
    withServer(t, { tuning: { handshakeTimeoutMs: 1000, handshakesPerSource: 3 } }, async (rig) => {
      const silent = (from: string) => {
        const s = tcpConnect({ host: "127.0.0.1", port: rig.port, localAddress: from });
        s.on("error", () => {});
        const opened = Date.now();
        return closeOfSocket(s, `silent client from ${from} closed`).then(() => Date.now() - opened);
      };
      const fromOne = Array.from({ length: 5 }, () => silent("127.0.0.1"));
      await until(() => rig.observer.results("server").length === 2, "two closed at once");
      t.deepEqual(rig.observer.results("server"), ["source_limit", "source_limit"]);
      // Another address is not held to the first one's count.
      const fromOther = silent("127.0.0.2");
      const lasted = (await within(Promise.all([...fromOne, fromOther]), 5000, "every client closed")).sort(
        (x, y) => x - y,
      );
      t.true((lasted[1] ?? 0) < 500 && (lasted[2] ?? 0) >= 900, `closed after ${lasted.join(", ")} ms`);
      await until(() => rig.observer.results("server").length === 6, "every handshake reported");
      t.deepEqual(rig.observer.results("server").sort(), [
        "source_limit",
        "source_limit",
        "timeout",
        "timeout",
        "timeout",
        "timeout",
      ]);
      // Once they timed out, the address may handshake again.
      const again = tcpConnect({ host: "127.0.0.1", port: rig.port });
      again.on("error", () => {});
      await closeOfSocket(again, "a later client closed");
      await until(() => rig.observer.results("server").length === 7, "the later handshake reported");
      t.is(rig.observer.results("server")[6], "timeout", "held to the timeout like any other, not refused");
    }),
);

test.serial("no certificate for the pod: the connection is closed at once, no_identity", (t) =>
  withServer(t, { identity: false }, async (rig) => {
    const s = tcpConnect({ host: "127.0.0.1", port: rig.port });
    s.on("error", () => {});
    await closeOfSocket(s, "client closed");
    await until(() => rig.observer.handshakes.length === 1, "no_identity reported");
    t.deepEqual(rig.observer.handshakes, [{ role: "server", result: "no_identity", seconds: 0 }]);
  }),
);

/** An app that sends back what it receives and ends when its peer does. */
function echoApp(s: Socket): void {
  s.on("error", () => {});
  s.pipe(s);
}

/** Writes `text` on the stream and waits until the stream has received `total` bytes in all. */
async function roundTrip(x: Exchange, text: string, total: number): Promise<void> {
  x.stream.write(Buffer.from(text));
  await until(() => x.received() === total, `echo of ${text}`);
}

test.serial("close(): a running stream finishes, the session then closes; new connections are refused", (t) =>
  withServer(t, {}, async (rig) => {
    const app = await rig.app(echoApp);
    const client = await hboneClient(rig);
    let goaway = false;
    client.session.on("goaway", () => {
      goaway = true;
    });
    const x = connectTo(client.session, `${POD_IP}:${app.port}`);
    t.is(await within(x.status, 5000, "status"), "200");
    await roundTrip(x, "before", 6);
    const handshaking = tcpConnect({ host: "127.0.0.1", port: rig.port });
    await once(handshaking, "connect");
    await until(() => rig.server.live === 2, "a session and a handshake live");
    rig.server.close();
    await until(() => goaway, "GOAWAY at the client");
    // Dropped at once, not left to its 10 s handshake timeout.
    await closeOfSocket(handshaking, "the connection in its handshake");
    await roundTrip(x, "after close", 17);

    const late = tcpConnect({ host: "127.0.0.1", port: rig.port });
    late.on("error", () => {});
    await closeOfSocket(late, "a connection after close()");
    t.deepEqual(rig.observer.results("server"), ["ok"], "neither dropped connection is reported as a handshake");

    x.stream.end();
    t.is((await within(x.body, 5000, "the app's end")).toString(), "beforeafter close");
    t.is(await within(x.closed, 5000, "stream close"), undefined);
    t.is(await within(client.closed, 5000, "the session's close after its last stream"), undefined);
    await until(() => rig.observer.closed.length === 1, "connection closed report");
    t.like(rig.observer.closed[0]?.end, { sent: 17, received: 17 });
  }),
);

test.serial("destroy(): streams, sessions, handshakes and app connects are reset and their fds closed", (t) =>
  withServer(t, {}, async (rig) => {
    const app = await rig.app(echoApp);
    const full = fullListener();
    try {
      rig.route(8080, full.port);
      const client = await hboneClient(rig);
      const running = connectTo(client.session, `${POD_IP}:${app.port}`);
      t.is(await within(running.status, 5000, "status"), "200");
      await roundTrip(running, "ping", 4);
      const connecting = connectTo(client.session, `${POD_IP}:8080`);
      await until(() => rig.dials.length === 2, "the pending app connect");
      const silent = tcpConnect({ host: "127.0.0.1", port: rig.port });
      silent.on("error", () => {});
      await once(silent, "connect");
      await until(() => rig.server.live === 3, "a session, a handshake and an app connect live");

      rig.server.destroy();
      t.not(await within(running.closed, 5000, "running stream"), undefined, "reset");
      t.not(await within(connecting.closed, 5000, "connecting stream"), undefined, "reset");
      await within(client.closed, 5000, "client session");
      await closeOfSocket(silent, "the connection in its handshake");
      await closeOfSocket(app.sockets[0] as Socket, "the app's connection");
      await until(() => rig.server.live === 0, "nothing live in the server");
      // Closed, not left to fail when the listener goes: no socket of ours still sends SYNs to it.
      t.false(
        tcpEntries().some((e) => e.remotePort === full.port && e.state === SYN_SENT),
        "the pending app connect's socket is closed",
      );
      await until(() => rig.observer.closed.length === 1, "connection closed report");
      t.truthy(rig.observer.closed[0]?.end.error, "the relay ended by a reset");
      t.deepEqual(rig.observer.results("server"), ["ok"], "the dropped handshake is not the peer's failure");
    } finally {
      full.close();
    }
  }),
);

test.serial("rapid reset: CONNECTs reset before their answer end the session with ENHANCE_YOUR_CALM, logged", (t) => {
  const captured = capturingLogger("info");
  return withServer(t, { log: captured.logger }, async (rig) => {
    // A closed port: each app connect fails at once, so the dials cost no lasting fd.
    const probe = openListenerFd({ address: "127.0.0.1", port: 0 });
    const closedPort = localPort(probe);
    closeFd(probe);
    const client = await hboneClient(rig);
    // The server allows a burst of 1000 unanswered resets (agent/h2/session.ts EARLY_RESETS). A reset counts only if
    // it arrives before the 503: on a loaded machine a CONNECT and its reset may reach the server in two reads, with
    // the answer between them, so the client goes on until the server's GOAWAY stops it (canRequest).
    let opened = 0;
    while (client.session.canRequest && opened < 5000) {
      for (let i = 0; i < 100 && client.session.canRequest; i++, opened++) {
        connectTo(client.session, `${POD_IP}:${closedPort}`).stream.reset();
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    t.true(opened > 1000, `${opened} streams opened and reset`);
    t.is(await within(client.closed, 5000, "the client's session close"), undefined);
    await until(() => captured.lines.some((l) => l.level === 40), "the warning");
    t.like(
      captured.lines.find((l) => l.level === 40),
      {
        pod: "shop/db",
        listener: "hbone",
        peer: formatSpiffeId(sid("shop", "cart")),
        ip: "127.0.0.1",
        msg: "HBONE peer abused the session (ENHANCE_YOUR_CALM); session closed",
      },
    );
    await until(() => rig.server.live === 0, "the server's session gone");
  });
});
