import test from "ava";
import { appSource, startConnect, transparentSourcePort, whenConnected } from "../../../agent/dataplane/pod-socket.js";
import { Reactor } from "../../../agent/dataplane/reactor.js";
import { AF_INET, closeFd, EINPROGRESS, tcpSocket } from "../../../native-bindings/io.js";
import { openListenerFd } from "../../../native-bindings/sockets.js";
import { assertNoLeak, fdBaseline } from "../../support/fd-leak.js";
import { localPort } from "./tls-support.js";

const ECONNREFUSED = 111;

/** Starts a non-blocking connect to 127.0.0.1:port and waits for whenConnected's verdict. */
async function connectAndWait(reactor: Reactor, port: number, timeoutMs = 2000) {
  const fd = tcpSocket(AF_INET);
  const started = startConnect(fd, { address: "127.0.0.1", port });
  const errno = await new Promise<number>((resolve) => whenConnected(reactor, fd, started, timeoutMs, resolve));
  closeFd(fd);
  return { started, errno };
}

test.serial(
  "a connect decided at once (same host) is answered without a loop turn: connected or refused",
  async (t) => {
    const baseline = fdBaseline();
    const reactor = new Reactor();
    const listener = openListenerFd({ address: "127.0.0.1", port: 0 });
    try {
      const port = localPort(listener);
      const up = await connectAndWait(reactor, port);
      t.is(up.errno, 0);
      closeFd(listener);
      const down = await connectAndWait(reactor, port);
      t.is(down.errno, ECONNREFUSED);
      t.true(
        up.started === -EINPROGRESS || down.started === -EINPROGRESS,
        "the kernel said EINPROGRESS, so the answer came from asking the socket",
      );
      t.is(reactor.stats.wakeups, 0, "no epoll registration, no wake-up");
    } finally {
      closeFd(listener);
      await reactor.close();
    }
    await assertNoLeak(t, baseline);
  },
);

test.serial("a connect still under way is waited for, and times out with ETIMEDOUT", async (t) => {
  const baseline = fdBaseline();
  const reactor = new Reactor();
  // A backlog of 0 that nobody accepts from: the first connection fills it, the next SYN is dropped.
  const listener = openListenerFd({ address: "127.0.0.1", port: 0, backlog: 0 });
  const filler = tcpSocket(AF_INET);
  try {
    const port = localPort(listener);
    startConnect(filler, { address: "127.0.0.1", port });
    await new Promise((r) => setTimeout(r, 50));
    const from = Date.now();
    const pending = await connectAndWait(reactor, port, 300);
    t.is(pending.errno, 110);
    t.true(Date.now() - from >= 290);
    t.is(reactor.size, 0, "the socket left the epoll set");
  } finally {
    closeFd(filler);
    closeFd(listener);
    await reactor.close();
  }
  await assertNoLeak(t, baseline);
});

test("the app sees the caller's address, except where the kernel's own choice is the caller or none exists", (t) => {
  t.is(appSource("10.0.1.5", "10.0.2.7"), "10.0.1.5", "another pod: its address");
  t.is(appSource("::ffff:10.0.1.5", "10.0.2.7"), "10.0.1.5", "IPv4-mapped is the IPv4 address");
  t.is(appSource("fd00::5", "fd00:0::7"), "fd00::5", "IPv6 as given");
  t.is(appSource("10.0.2.7", "10.0.2.7"), undefined, "a pod calling itself: no bind, the kernel picks that address");
  t.is(appSource("fd00::7", "fd00:0:0::7"), undefined, "the same IPv6 address written two ways");
  t.is(appSource("10.0.1.5", "fd00::7"), undefined, "no source of the target's family");
  t.is(appSource("fe80::1", "fd00::7"), undefined, "link-local: its scope is an interface outside the pod");
  t.is(appSource("fd00::5", "fe80::7"), undefined, "to a link-local address: through eth0, not lo");
  t.is(appSource("", "10.0.2.7"), undefined, "peer unknown");
});

test("transparent source ports stay below Linux's default ephemeral range, where callers' ports come from", (t) => {
  t.is(
    transparentSourcePort(() => 0),
    1024,
  );
  t.is(
    transparentSourcePort(() => 0.999999999),
    32767,
  );
  for (let i = 0; i < 1000; i++) {
    const port = transparentSourcePort();
    t.true(port >= 1024 && port < 32768);
  }
});
