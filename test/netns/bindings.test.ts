import { readlinkSync } from "node:fs";
import test from "ava";
import { SyscallError } from "../../native-bindings/errors.js";
import { interfaceAddresses } from "../../native-bindings/ifaddrs.js";
import { getsockoptInt, IP_TRANSPARENT, SO_MARK, SOL_IP, SOL_SOCKET } from "../../native-bindings/libc.js";
import { inNetns, inNetnsFd, netnsId, openNetns } from "../../native-bindings/netns.js";
import {
  closeFdQuietly,
  connectInNetns,
  connectInNetnsFd,
  openListenerFdInNetns,
  socketFd,
} from "../../native-bindings/sockets.js";
import { clusterFor } from "./support/cluster.js";
import { answerIn, closeServer } from "./support/sockets.js";

const ownNetns = () => readlinkSync("/proc/thread-self/ns/net");

test("inNetns runs inside the namespace and always comes back, even when the function throws", async (t) => {
  const cluster = await clusterFor(t, { nodes: [{ name: "n1", pods: [{ name: "a" }] }] });
  const home = ownNetns();
  const inside = inNetns(cluster.pod("a").netnsPath, ownNetns);
  t.not(inside, home);
  t.throws(
    () =>
      inNetns(cluster.pod("a").netnsPath, () => {
        throw new Error("boom");
      }),
    { message: "boom" },
  );
  t.is(ownNetns(), home);
  const missing = t.throws(() => inNetns("/var/run/netns/ambit-no-such-netns", ownNetns), { instanceOf: SyscallError });
  t.is(missing?.code, "ENOENT");
  t.is(ownNetns(), home);
});

test("inNetnsFd enters the namespace a descriptor holds and always comes back; its identity is the path's", async (t) => {
  const cluster = await clusterFor(t, { nodes: [{ name: "n1", pods: [{ name: "a" }] }] });
  const a = cluster.pod("a");
  const home = ownNetns();
  const fd = openNetns(a.netnsPath);
  t.teardown(() => closeFdQuietly(fd));
  t.deepEqual(netnsId(fd), netnsId(a.netnsPath));
  t.not(netnsId(fd).inode, netnsId("/proc/self/ns/net").inode);
  t.is(inNetnsFd(fd, ownNetns), `net:[${netnsId(fd).inode}]`);
  const inside = inNetnsFd(fd, () => interfaceAddresses());
  t.deepEqual(
    inside.filter((x) => x.family === 4).map((x) => `${x.interface} ${x.address}`),
    ["lo 127.0.0.1", `eth0 ${a.ipv4}`],
  );
  t.throws(
    () =>
      inNetnsFd(fd, () => {
        throw new Error("boom");
      }),
    { message: "boom" },
  );
  t.is(ownNetns(), home);
  const notNetns = openNetns("/proc/self/ns/mnt");
  t.teardown(() => closeFdQuietly(notNetns));
  const wrong = t.throws(() => inNetnsFd(notNetns, ownNetns, "a mount namespace"), { instanceOf: SyscallError });
  t.is(wrong?.code, "EINVAL");
  t.regex(wrong?.message ?? "", /a mount namespace/);
  t.is(ownNetns(), home);
});

test("a marked connection leaves from the pod's IP; a refused one is a normal ECONNREFUSED", async (t) => {
  const cluster = await clusterFor(t, { nodes: [{ name: "n1", pods: [{ name: "a" }, { name: "b" }] }] });
  const [a, b] = [cluster.pod("a"), cluster.pod("b")];
  const app = answerIn(b.netnsPath, b.ipv4, 8080, (s) => `${s.remoteAddress}`);
  t.teardown(() => closeServer(app));
  const s = await connectInNetns(a.netnsPath, { address: b.ipv4, port: 8080, mark: 0x539 });
  t.is(getsockoptInt(socketFd(s) as number, SOL_SOCKET, SO_MARK), 0x539);
  const seen = await new Promise<string>((resolve) => {
    let text = "";
    s.on("data", (d: Buffer) => {
      text += d;
    });
    s.on("end", () => {
      s.end();
      resolve(text);
    });
  });
  t.is(seen, a.ipv4);
  await t.throwsAsync(connectInNetns(a.netnsPath, { address: b.ipv4, port: 1, mark: 0x539 }), {
    code: "ECONNREFUSED",
  });
  // The same through a descriptor held on a's namespace.
  const fd = openNetns(a.netnsPath);
  t.teardown(() => closeFdQuietly(fd));
  const viaFd = await connectInNetnsFd(fd, { address: b.ipv4, port: 8080, mark: 0x53a });
  t.is(getsockoptInt(socketFd(viaFd) as number, SOL_SOCKET, SO_MARK), 0x53a);
  t.is(viaFd.localAddress, a.ipv4);
  viaFd.destroy();
  await t.throwsAsync(connectInNetnsFd(fd, { address: b.ipv4, port: 1, mark: 0x539 }), { code: "ECONNREFUSED" });
});

test("a transparent listener (for TPROXY) is created with IP_TRANSPARENT set", async (t) => {
  const cluster = await clusterFor(t, { nodes: [{ name: "n1", pods: [{ name: "a" }] }] });
  const fd = openListenerFdInNetns(cluster.pod("a").netnsPath, { address: "0.0.0.0", port: 15009, transparent: true });
  t.teardown(() => closeFdQuietly(fd));
  t.is(getsockoptInt(fd, SOL_IP, IP_TRANSPARENT), 1);
  const taken = t.throws(() => openListenerFdInNetns(cluster.pod("a").netnsPath, { address: "0.0.0.0", port: 15009 }), {
    instanceOf: SyscallError,
  });
  t.is(taken?.code, "EADDRINUSE");
});
