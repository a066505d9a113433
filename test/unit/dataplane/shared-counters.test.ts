import { Worker } from "node:worker_threads";
import test from "ava";
import {
  COUNTER,
  DATAPLANE_COUNTERS,
  ROW_STRIDE,
  SharedCounters,
  WorkerCounters,
} from "../../../agent/dataplane/shared-counters.js";
import { DONE, GO, HAMMER_STEP, HAMMER_STEPS } from "./support/counter-hammer.js";

test("a worker's increments land in its own row only; the reader sums rows per counter", (t) => {
  const shared = new SharedCounters(3);
  const one = new WorkerCounters(shared.rowRef(1));
  const two = new WorkerCounters(shared.rowRef(2));
  one.inc(COUNTER.connections_opened);
  one.inc(COUNTER.connections_opened);
  two.inc(COUNTER.connections_opened);
  two.add(COUNTER.upstream_bytes, 1500);
  t.is(shared.value(0, COUNTER.connections_opened), 0);
  t.is(shared.value(1, COUNTER.connections_opened), 2);
  t.is(shared.value(2, COUNTER.connections_opened), 1);
  t.is(shared.sum(COUNTER.connections_opened), 3);
  t.is(shared.sum(COUNTER.upstream_bytes), 1500);
  t.is(one.get(COUNTER.upstream_bytes), 0, "rows do not overlap");
  t.is(shared.value(1, COUNTER.downstream_bytes), 0, "a counter does not spill into its neighbour");
});

test("the catalogue is closed and fits a row with a spare cache line; bad rows are refused", (t) => {
  t.is(new Set(DATAPLANE_COUNTERS.map((c) => c.name)).size, DATAPLANE_COUNTERS.length);
  for (const c of DATAPLANE_COUNTERS) t.regex(c.name, /^[a-z][a-z_]*[a-z]$/);
  t.true(ROW_STRIDE * 8 - DATAPLANE_COUNTERS.length * 8 >= 64);
  t.is((ROW_STRIDE * 8) % 64, 0);
  const shared = new SharedCounters(2);
  t.is(t.throws(() => shared.rowRef(2))?.message, "counter row 2 is not one of 0..1");
  t.is(
    t.throws(() => new WorkerCounters({ buffer: shared.buffer, row: -1 }))?.message,
    "counter row -1 is not one of 0..1",
  );
  t.throws(() => new SharedCounters(0), { message: /1\.\.1024/ });
});

test("no torn read: the main thread reading a row while its worker adds to it sees only whole values", async (t) => {
  const shared = new SharedCounters(2);
  const flags = new Int32Array(new SharedArrayBuffer(8));
  const worker = new Worker(new URL("./support/counter-hammer.js", import.meta.url), {
    workerData: { counters: shared.rowRef(1), flags: flags.buffer },
  });
  const exited = new Promise((resolve) => worker.once("exit", resolve));
  const last = new Float64Array(DATAPLANE_COUNTERS.length);
  let reads = 0;
  let torn = 0;
  let backwards = 0;
  Atomics.store(flags, GO, 1);
  Atomics.notify(flags, GO);
  const deadline = Date.now() + 30_000;
  while (Atomics.load(flags, DONE) === 0 && Date.now() < deadline) {
    for (let index = 0; index < DATAPLANE_COUNTERS.length; index++) {
      const value = shared.value(1, index);
      reads++;
      if (value % HAMMER_STEP !== 0) torn++;
      if (value < (last[index] as number)) backwards++;
      last[index] = value;
    }
  }
  t.is(await exited, 0);
  t.is(torn, 0, `${torn} of ${reads} reads were not a whole number of steps`);
  t.is(backwards, 0, "a later read never saw a lower value");
  t.true(reads > 1000, `the reader ran alongside the writer (${reads} reads)`);
  for (let index = 0; index < DATAPLANE_COUNTERS.length; index++) {
    t.is(shared.value(1, index), HAMMER_STEP * HAMMER_STEPS);
    t.is(shared.value(0, index), 0);
  }
});
