import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { Worker } from "node:worker_threads";
import test from "ava";
import { Reactor } from "../../../agent/dataplane/reactor.js";
import { closeFd, EPOLLHUP, EPOLLIN, EPOLLOUT, eventfd, read, socketpair, write } from "../../../native-bindings/io.js";
import { assertNoLeak, fdBaseline } from "../../support/fd-leak.js";

const one = Buffer.alloc(8);
one.writeBigUInt64LE(1n);

/** Resolves with the next `n` events a handler sees. */
function recorder() {
  const seen: { events: number; token: number }[] = [];
  let wake: (() => void) | undefined;
  return {
    seen,
    handler: {
      onEvents(events: number, token: number) {
        seen.push({ events, token });
        wake?.();
      },
    },
    async next(count: number) {
      while (seen.length < count) await new Promise<void>((resolve) => (wake = resolve));
    },
  };
}

test.serial("eventfd: a write from a timer wakes the handler with its token; removed, it hears nothing", async (t) => {
  const baseline = fdBaseline();
  const reactor = new Reactor();
  const efd = eventfd();
  const rec = recorder();
  const token = reactor.add(efd, EPOLLIN, {
    onEvents(events, tok) {
      read(efd, Buffer.alloc(8), 8);
      rec.handler.onEvents(events, tok);
    },
  });
  t.is(reactor.size, 1);
  setTimeout(() => write(efd, one, 8), 20);
  await rec.next(1);
  t.deepEqual(rec.seen[0], { events: EPOLLIN, token });
  reactor.remove(token);
  t.is(reactor.size, 0);
  write(efd, one, 8);
  await sleep(100);
  t.is(rec.seen.length, 1, "no event after remove");
  closeFd(efd);
  await reactor.close();
  await assertNoLeak(t, baseline);
});

test.serial("socketpair: readable, then writable after modify, and a hang-up even with an empty mask", async (t) => {
  const baseline = fdBaseline();
  const reactor = new Reactor();
  const [a, b] = socketpair();
  const rec = recorder();
  const token = reactor.add(a, EPOLLIN, rec.handler);
  write(b, Buffer.from("ping"), 4);
  await rec.next(1);
  const buf = Buffer.alloc(16);
  t.is(read(a, buf, 16), 4);
  t.is(buf.toString("utf8", 0, 4), "ping");
  t.is(reactor.modify(token, EPOLLOUT), 0);
  await rec.next(2);
  t.is(rec.seen[1]?.events, EPOLLOUT);
  t.is(reactor.modify(token, 0), 0);
  closeFd(b);
  await rec.next(3);
  t.truthy((rec.seen[2]?.events ?? 0) & EPOLLHUP, "EPOLLHUP reported with mask 0");
  reactor.forget(token);
  closeFd(a);
  await reactor.close();
  await assertNoLeak(t, baseline);
});

test.serial("a throwing handler is reported and the rest of the batch is still dispatched", async (t) => {
  const baseline = fdBaseline();
  const errors: unknown[] = [];
  const reactor = new Reactor({ onHandlerError: (err) => errors.push(err) });
  const e1 = eventfd();
  const e2 = eventfd();
  const rec = recorder();
  reactor.add(e1, EPOLLIN, {
    onEvents() {
      read(e1, Buffer.alloc(8), 8);
      throw new Error("handler bug");
    },
  });
  reactor.add(e2, EPOLLIN, {
    onEvents(events, token) {
      read(e2, Buffer.alloc(8), 8);
      rec.handler.onEvents(events, token);
    },
  });
  write(e1, one, 8);
  write(e2, one, 8);
  await rec.next(1);
  t.is(errors.length, 1);
  t.is((errors[0] as Error).message, "handler bug");
  closeFd(e1);
  closeFd(e2);
  await reactor.close();
  await assertNoLeak(t, baseline);
});

test.serial(
  "a token freed during a batch is not reused in it: a stale event never reaches the new owner",
  async (t) => {
    const baseline = fdBaseline();
    const reactor = new Reactor();
    const e1 = eventfd();
    const e2 = eventfd();
    const e3 = eventfd();
    const heard: string[] = [];
    let t2 = -1;
    let t3 = -1;
    const third = {
      onEvents() {
        heard.push("e3");
        read(e3, Buffer.alloc(8), 8);
      },
    };
    reactor.add(e1, EPOLLIN, {
      onEvents() {
        heard.push("e1");
        read(e1, Buffer.alloc(8), 8);
        // e2's event is already in this batch; its token must not go to e3.
        reactor.remove(t2);
        t3 = reactor.add(e3, EPOLLIN, third);
      },
    });
    t2 = reactor.add(e2, EPOLLIN, {
      onEvents() {
        heard.push("e2");
      },
    });
    write(e1, one, 8);
    write(e2, one, 8);
    await sleep(100);
    t.deepEqual(heard, ["e1"]);
    t.not(t3, t2);
    write(e3, one, 8);
    await sleep(100);
    t.deepEqual(heard, ["e1", "e3"]);
    for (const fd of [e1, e2, e3]) closeFd(fd);
    await reactor.close();
    await assertNoLeak(t, baseline);
  },
);

test.serial(
  "a reactor in a worker thread: events arrive on the worker's loop and the thread exits cleanly",
  async (t) => {
    const baseline = fdBaseline();
    const worker = new Worker(new URL("./support/reactor-worker.js", import.meta.url));
    const [ready] = (await once(worker, "message")) as [{ eventfd: number }];
    // fds are process-wide: the main thread wakes the worker's reactor through the worker's own eventfd.
    write(ready.eventfd, one, 8);
    const [event] = (await once(worker, "message")) as [{ events: number; value: number }];
    t.deepEqual(event, { events: EPOLLIN, value: 1 });
    const exited = once(worker, "exit");
    worker.postMessage("stop");
    const [code] = (await exited) as [number];
    t.is(code, 0);
    await assertNoLeak(t, baseline);
  },
);

test.serial("close() twice resolves once the handle is closed; add after close is refused", async (t) => {
  const baseline = fdBaseline();
  const reactor = new Reactor();
  const first = reactor.close();
  t.is(reactor.close(), first);
  await first;
  const efd = eventfd();
  t.throws(() => reactor.add(efd, EPOLLIN, { onEvents() {} }), { code: "reactor_closed" });
  closeFd(efd);
  await assertNoLeak(t, baseline);
});
