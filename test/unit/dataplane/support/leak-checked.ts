import { setTimeout as sleep } from "node:timers/promises";
import type { ExecutionContext } from "ava";
import { Reactor } from "../../../../agent/dataplane/reactor.js";
import type { TlsContext } from "../../../../agent/dataplane/tls/context.js";
import { assertNoLeak, fdBaseline } from "../../../support/fd-leak.js";
import type { Workload } from "../../identity/helpers.js";
import { contextOf, type Fixture, liveObjects, workloads } from "../tls-support.js";

/** What every leak-checked test gets: the CA's workloads, a Reactor of its own, TLS contexts disposed after it. */
export interface LeakChecked extends Fixture {
  reactor: Reactor;
  /** A context built for this test; disposed after it. */
  context(w: Workload, bundlePem?: string): TlsContext;
}

/** What a test builds on the reactor (servers, pools, listeners), and how it is taken down. */
export interface Rig<W> {
  world: W;
  /**
   * Closes what the test built, so that its fds and connections can go: run after the body, before the leak check,
   * and again in the teardown (after a failed body too), so it must be idempotent.
   */
  release?(): void;
  /** Teardown only, after release: what must not run before the check (it would hide a leak the check is for). */
  destroy?(): void;
  /** What the code under test still counts as live, beside SSL connections and reactor handlers. */
  live?(): number;
}

/**
 * Runs `body` with a Reactor of its own and what `setup` builds on it, then checks that every fd the test opened is
 * closed (the reactor's epoll fd included), with no handler left in the reactor and every SSL object and context
 * freed: the code under test released all it owned.
 */
export async function runLeakChecked<W>(
  t: ExecutionContext,
  setup: (base: LeakChecked) => Rig<W>,
  body: (world: W) => Promise<void>,
): Promise<void> {
  const f = await workloads();
  const baseline = fdBaseline();
  t.deepEqual(liveObjects(), { contexts: 0, connections: 0 });
  const reactor = new Reactor();
  const serving = fdBaseline();
  const contexts: TlsContext[] = [];
  const context = (w: Workload, bundlePem?: string) => {
    const c = contextOf(w, bundlePem);
    contexts.push(c);
    return c;
  };
  let rig: Rig<W> | undefined;
  const live = () => (rig?.live?.() ?? 0) + liveObjects().connections + reactor.size;
  try {
    rig = setup({ ...f, reactor, context });
    await body(rig.world);
    rig.release?.();
    // Released while the reactor still runs: no fd, no SSL object, no handler left behind.
    await assertNoLeak(t, serving, live);
  } finally {
    // After a failed test too (AVA's assertions throw): the reactor's handle open would keep the process alive.
    try {
      rig?.release?.();
      rig?.destroy?.();
      // Bounded, not asserted: a failed test's connections finish closing here, not in the next test's baseline.
      for (const deadline = Date.now() + 2000; live() > 0 && Date.now() < deadline; ) await sleep(5);
    } finally {
      for (const c of contexts) c.dispose();
      await reactor.close();
    }
  }
  t.deepEqual(liveObjects(), { contexts: 0, connections: 0 }, "every SSL and SSL_CTX is freed");
  await assertNoLeak(t, baseline);
}
