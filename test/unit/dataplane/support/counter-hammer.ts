/**
 * A worker thread for shared-counters.test.ts: waits for the go flag, then adds HAMMER_STEP to every counter of its
 * row HAMMER_STEPS times (plain stores, as the relay does), then raises the done flag. workerData: {counters, flags}.
 */
import { workerData } from "node:worker_threads";
import { type CounterRowRef, DATAPLANE_COUNTERS, WorkerCounters } from "../../../../agent/dataplane/shared-counters.js";

/** 2^32 + 1: every store changes both 32-bit halves of the double, so a torn read would not be a multiple of it. */
export const HAMMER_STEP = 2 ** 32 + 1;
/** Steps per counter; HAMMER_STEP * HAMMER_STEPS stays below 2^53, so every value is an exact integer. */
export const HAMMER_STEPS = 2_000_000;
export const GO = 0;
export const DONE = 1;

const data = workerData as { counters: CounterRowRef; flags: SharedArrayBuffer } | null;
if (data) {
  const counters = new WorkerCounters(data.counters);
  const flags = new Int32Array(data.flags);
  while (Atomics.load(flags, GO) === 0) Atomics.wait(flags, GO, 0, 1000);
  for (let step = 0; step < HAMMER_STEPS; step++) {
    for (let index = 0; index < DATAPLANE_COUNTERS.length; index++) counters.add(index, HAMMER_STEP);
  }
  Atomics.store(flags, DONE, 1);
}
