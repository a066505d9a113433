/**
 * The data plane's counters (agent/dataplane/shared-counters.ts) as Prometheus counters, read from the workers'
 * shared rows at scrape time: ambit_dataplane_<counter>_total{worker="0".."N-1"}. Nothing runs between scrapes (no
 * timer, no message from the workers); a scrape reads N rows of a dozen doubles.
 */
import { Counter, type Registry } from "prom-client";
import { DATAPLANE_COUNTERS, type SharedCounters } from "../dataplane/shared-counters.js";

/**
 * How much a counter grew between two reads of its row: the difference, or all of `current` when it is lower than
 * before (a row that started over from zero), as Prometheus' rate() reads a counter reset. So an exported counter
 * only ever goes up. Rows are not reset today (a restarted worker counts on in its slot's row); this keeps a future
 * reset from ever decreasing a series, which prom-client would refuse with an exception in the middle of a scrape.
 */
export function counterIncrease(previous: number, current: number): number {
  return current >= previous ? current - previous : current;
}

/** Registers one Counter per catalogue entry on `registry`, each advanced at collect() by its rows' growth. */
export function registerDataplaneCounters(registry: Registry, counters: SharedCounters): void {
  // Label values from a closed set: the worker slots, "0".."N-1".
  const workers = Array.from({ length: counters.rows }, (_, row) => String(row));
  DATAPLANE_COUNTERS.forEach((spec, index) => {
    const seen = new Float64Array(counters.rows);
    new Counter({
      name: `ambit_dataplane_${spec.name}_total`,
      help: spec.help,
      labelNames: ["worker"],
      registers: [registry],
      collect() {
        for (let row = 0; row < counters.rows; row++) {
          const now = counters.value(row, index);
          this.inc({ worker: workers[row] as string }, counterIncrease(seen[row] as number, now));
          seen[row] = now;
        }
      },
    });
  });
}
