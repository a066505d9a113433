/**
 * Inbound capture does not depend on the addresses the pod spec lists: plaintext sent to a STRICT pod through its
 * IPv6 link-local address, a secondary address, or a family its spec does not list is refused like plaintext to its
 * listed IP, for IPv4-only and dual-stack pods, while a PERMISSIVE pod still gets it delivered.
 */
import type net from "node:net";
import test, { type ExecutionContext } from "ava";
import { MeshCa } from "../../agent/identity/ca.js";
import type { SimCluster, SimPod } from "../../agent/sim/index.js";
import { connectInNetns } from "../../native-bindings/sockets.js";
import { waitFor } from "../bench/support.js";
import { clusterFor } from "./support/cluster.js";
import { nodeFor, recorder } from "./support/components.js";
import { answerIn, closeServer } from "./support/sockets.js";

const meshed = { "ambit.dev/mesh": "enabled" };
const TD = "cluster.local";

/** The pod's eth0: its interface index and IPv6 link-local address (waiting out duplicate address detection). */
async function linkLocal(cluster: SimCluster, pod: SimPod): Promise<{ address: string; ifindex: number }> {
  let found: { address: string; ifindex: number } | undefined;
  await waitFor(`${pod.name}'s link-local address`, async () => {
    const out = await cluster.exec(pod.netnsName, "ip", ["-j", "-6", "addr", "show", "dev", "eth0", "scope", "link"]);
    const [link] = JSON.parse(out.stdout) as Array<{
      ifindex: number;
      addr_info: Array<{ local?: string; tentative?: boolean }>;
    }>;
    // Addresses the filter left out come as empty objects.
    const addr = link?.addr_info.find((a) => a.local?.startsWith("fe80:") && !a.tentative);
    if (link && addr?.local) found = { address: addr.local, ifindex: link.ifindex };
    return found !== undefined;
  });
  return found as { address: string; ifindex: number };
}

/** A plaintext request from `from` to address:port; resolves to the answer, rejects with the socket's error. */
function plaintext(from: SimPod, address: string, port: number, scopeId?: number): Promise<string> {
  return connectInNetns(from.netnsPath, { address, port, mark: 0, ...(scopeId ? { scopeId } : {}) }).then(
    (s: net.Socket) =>
      new Promise((resolve, reject) => {
        const chunks: Buffer[] = [];
        s.on("data", (c: Buffer) => chunks.push(c));
        s.on("error", reject);
        s.on("end", () => resolve(Buffer.concat(chunks).toString()));
        s.end("hello");
      }),
  );
}

async function setup(t: ExecutionContext, ipv6: boolean) {
  const cluster = await clusterFor(t, {
    ipv6,
    nodes: [
      {
        name: "n1",
        pods: [
          { name: "strict", labels: meshed, peerAuthentication: "STRICT" },
          { name: "permissive", labels: meshed },
          { name: "outsider" },
        ],
      },
    ],
  });
  const ca = new MeshCa(await MeshCa.generateRoot(TD), { trustDomain: TD });
  const events = recorder();
  const node = await nodeFor(t, { nodeName: "n1", ca, state: cluster.clusterState(), observer: events.observer });
  const pods = {
    strict: cluster.pod("strict"),
    permissive: cluster.pod("permissive"),
    outsider: cluster.pod("outsider"),
  };
  // Apps listening on every address of both families, as most servers do.
  for (const pod of [pods.strict, pods.permissive]) {
    for (const any of ["0.0.0.0", "::"]) {
      const app = answerIn(pod.netnsPath, any, 8080, () => `app of ${pod.name}`);
      t.teardown(() => closeServer(app));
    }
  }
  return { cluster, pods, events, reported: () => node.proxy.reported() };
}

/** A second address on the pod's eth0 that the pod spec does not list (hosts from 200 up are never sim pods). */
async function addUnlisted(cluster: SimCluster, pod: SimPod, family: 4 | 6, host: number): Promise<string> {
  const address =
    family === 4
      ? pod.ipv4.replace(/\.\d+$/, `.${host}`)
      : (pod.ipv6 as string).replace(/::[0-9a-f]+$/, `::${host.toString(16)}`);
  const prefix = family === 4 ? "24" : "64";
  const args = family === 4 ? [] : ["nodad"];
  await cluster.exec(pod.netnsName, "ip", ["addr", "add", `${address}/${prefix}`, "dev", "eth0", ...args]);
  return address;
}

for (const ipv6 of [false, true]) {
  const kind = ipv6 ? "dual-stack" : "IPv4-only";

  test(`${kind}: plaintext to a STRICT pod's link-local address is reset; a PERMISSIVE pod's is delivered`, async (t) => {
    const { cluster, pods, events, reported } = await setup(t, ipv6);
    const strict = await linkLocal(cluster, pods.strict);
    const permissive = await linkLocal(cluster, pods.permissive);
    const outsiderEth0 = (await linkLocal(cluster, pods.outsider)).ifindex;
    await t.throwsAsync(plaintext(pods.outsider, strict.address, 8080, outsiderEth0), { code: "ECONNRESET" });
    await reported();
    t.true(
      events.events.refused.some((r) => r.pod === "default/strict" && r.reason === "plaintext_strict"),
      "refused by the agent as STRICT plaintext",
    );
    t.is(await plaintext(pods.outsider, permissive.address, 8080, outsiderEth0), "app of permissive");
    await reported();
    const delivered = events.events.opened.find((o) => o.pod === "default/permissive");
    t.is(delivered?.destination.ip, permissive.address, "went through the agent, to the address it was sent to");
    t.false(delivered?.tls);
  });

  test(`${kind}: plaintext to an address the pod spec does not list is reset under STRICT`, async (t) => {
    const { cluster, pods, events, reported } = await setup(t, ipv6);
    for (const family of ipv6 ? ([4, 6] as const) : ([4] as const)) {
      const unlisted = await addUnlisted(cluster, pods.strict, family, 200);
      await t.throwsAsync(plaintext(pods.outsider, unlisted, 8080), { code: "ECONNRESET" }, `IPv${family}`);
      const other = await addUnlisted(cluster, pods.permissive, family, 201);
      t.is(await plaintext(pods.outsider, other, 8080), "app of permissive", `IPv${family} PERMISSIVE`);
    }
    await reported();
    t.true(events.events.refused.length > 0);
    t.true(events.events.refused.every((r) => r.pod === "default/strict" && r.reason === "plaintext_strict"));
    // The listed addresses still behave as before.
    await t.throwsAsync(plaintext(pods.outsider, pods.strict.ipv4, 8080), { code: "ECONNRESET" });
    t.is(await plaintext(pods.outsider, pods.permissive.ipv4, 8080), "app of permissive");
  });
}
