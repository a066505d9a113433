/**
 * Cost of one hot-path counter increment, for agent/dataplane/shared-counters.ts: the plain object field the relay
 * counted into before, the WorkerCounters row (Float64Array on a SharedArrayBuffer, plain store), and the
 * alternatives (a raw Float64Array, Uint32Array, BigInt64Array plain stores, Atomics.add on Int32Array and
 * BigInt64Array). Each variant runs ITERATIONS increments per round, the median of ROUNDS rounds is printed in ns per
 * increment (loop overhead included, the same in every variant). Standalone, not in `make bench`.
 *
 *   node dist/test/bench/counter-bench.js [ITERATIONS=20000000] [ROUNDS=7] [same|spread]
 */
import { COUNTER, SharedCounters, WorkerCounters } from "../../agent/dataplane/shared-counters.js";

const iterations = Number(process.argv[2] ?? 20_000_000);
const rounds = Number(process.argv[3] ?? 7);
const I = COUNTER.connections_opened;

const shared = new SharedCounters(2);
const counters = new WorkerCounters(shared.rowRef(1));
const stats = { opened: 0, closed: 0, reset: 0 };
const f64 = new Float64Array(new SharedArrayBuffer(128));
const u32 = new Uint32Array(new SharedArrayBuffer(128));
const i32 = new Int32Array(new SharedArrayBuffer(128));
const i64 = new BigInt64Array(new SharedArrayBuffer(128));

/** Same slot every time (a dependency chain through memory: latency) or 8 slots in turn (throughput). */
const spread = process.argv[4] === "spread";
const at = (k: number) => (spread ? I + (k & 7) : I);

const variants: Record<string, (n: number) => void> = {
  "object field (RelayStats before)": (n) => {
    for (let k = 0; k < n; k++) {
      if (spread && k & 1) stats.closed++;
      else stats.opened++;
    }
  },
  "WorkerCounters.inc (chosen)": (n) => {
    for (let k = 0; k < n; k++) counters.inc(at(k));
  },
  "Float64Array[i]++ on a SAB": (n) => {
    for (let k = 0; k < n; k++) f64[at(k)]++;
  },
  "Uint32Array[i]++ on a SAB": (n) => {
    for (let k = 0; k < n; k++) u32[at(k)]++;
  },
  "BigInt64Array[i] += 1n on a SAB": (n) => {
    for (let k = 0; k < n; k++) i64[at(k)] = (i64[at(k)] as bigint) + 1n;
  },
  "Atomics.add(Int32Array)": (n) => {
    for (let k = 0; k < n; k++) Atomics.add(i32, at(k), 1);
  },
  "Atomics.add(BigInt64Array)": (n) => {
    for (let k = 0; k < n; k++) Atomics.add(i64, at(k), 1n);
  },
};

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}

for (const [name, run] of Object.entries(variants)) {
  run(iterations / 10);
  const ns: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const start = process.hrtime.bigint();
    run(iterations);
    ns.push(Number(process.hrtime.bigint() - start) / iterations);
  }
  console.log(`${name.padEnd(36)} ${median(ns).toFixed(2)} ns/increment (min ${Math.min(...ns).toFixed(2)})`);
}
console.log(`check: ${counters.get(I) > 0 && stats.opened > 0 && shared.value(1, I) === counters.get(I)}`);
