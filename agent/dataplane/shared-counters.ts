/**
 * The data plane's counters, in shared memory: one row per worker thread, written only by that worker (plain
 * stores, nothing posted, no timer), read by the main thread when Prometheus scrapes (agent/metrics/
 * dataplane-metrics.ts).
 *
 * Representation: Float64Array. A row is written by exactly one thread, so an increment needs no atomic
 * read-modify-write, only a store that a concurrent reader cannot see half-done. V8 compiles a Float64Array
 * element store to one 8-byte store (movsd on x86-64, str d on aarch64, the two architectures ambit runs on), and
 * an 8-byte store to an 8-byte aligned address is single-copy atomic on both (Intel SDM vol. 3 8.1.1; Arm ARM
 * B2.2.1); Float64Array elements are 8-byte aligned by construction (byteOffset must be a multiple of 8). So the
 * reader sees the old value or the new one, never a mix. (The ECMAScript memory model promises no-tear only for
 * integer element types and for Atomics; this relies on the engine and the hardware, checked by a test that reads
 * a row while a worker hammers it.) A double counts exactly up to 2^53: 9 PB of bytes, or 100,000 connections a
 * second for 2,800 years.
 * Measured (test/bench/counter-bench.ts, 2 shared cores, median ns per increment, three runs): spread over counters
 * as the relay increments, 1.1-1.5 (the plain object field it replaces: 1.4-2.0); the same slot back to back, a
 * chain through memory, 3.5-4.9 (object field 0.8-0.9); Atomics.add 10-22 on Int32Array or BigInt64Array. All of
 * it is noise beside the microseconds of syscalls a relay event costs; plain stores keep fences off the writer.
 * Plain BigInt64Array stores were as cheap once optimized (0.4-1.1), but allocate a BigInt each before that and
 * tear no less by the spec; Uint32Array is no-tear by the spec but wraps after 4 GiB of bytes.
 */
import { AmbitError } from "../errors.js";

/**
 * The closed catalogue of data-plane counters; a counter's position is its index in a row. Names are the
 * Prometheus metric names without `ambit_dataplane_` and `_total`.
 */
export const DATAPLANE_COUNTERS = [
  { name: "connections_accepted", help: "Connections accepted on the data plane's listeners" },
  { name: "accepts_paused", help: "Times accept ran out of descriptors or memory (EMFILE, ENFILE, ...) and paused" },
  { name: "accept_failures", help: "Other accept failures (connection gone while queued, firewall verdict)" },
  {
    name: "accepts_empty",
    help: "Readiness events on a listener shared by workers whose first accept found no connection (another took it)",
  },
  { name: "connections_opened", help: "Relayed connections opened (an upstream socket was created)" },
  { name: "connections_closed", help: "Relayed connections ended by EOF both ways, every byte delivered" },
  { name: "connections_reset", help: "Relayed connections ended by an error or a reset, passed on as a reset" },
  { name: "connect_failures", help: "Upstream connects refused or failed; the client was reset" },
  { name: "connect_timeouts", help: "Upstream connects abandoned after the connect timeout; the client was reset" },
  { name: "socket_failures", help: "No socket for the upstream side (EMFILE, ENFILE, ENOBUFS); the client was reset" },
  { name: "backpressured", help: "Writes that took less than was read, so reading that direction paused" },
  { name: "upstream_bytes", help: "Bytes relayed from clients to upstreams (written to the upstream socket)" },
  { name: "downstream_bytes", help: "Bytes relayed from upstreams to clients (written to the client socket)" },
  { name: "stream_sent_bytes", help: "Bytes relayed from app sockets into HTTP/2 streams (read from the socket)" },
  {
    name: "stream_received_bytes",
    help: "Bytes relayed from HTTP/2 streams to app sockets (written to the socket)",
  },
] as const;

export type CounterName = (typeof DATAPLANE_COUNTERS)[number]["name"];

/** Index of each counter in a row, by name: hot paths take the index once, as a module constant. */
export const COUNTER: { readonly [N in CounterName]: number } = Object.fromEntries(
  DATAPLANE_COUNTERS.map((c, i) => [c.name, i]),
) as { [N in CounterName]: number };

/**
 * Doubles per row: the catalogue rounded up to a 64-byte cache line, plus one spare line. Two workers writing
 * neighbouring rows in one cache line would bounce it between cores on every increment; a spare line keeps rows
 * apart whatever the buffer's own alignment is.
 */
export const ROW_STRIDE = Math.ceil(DATAPLANE_COUNTERS.length / 8) * 8 + 8;

/** Workers at most (each row is 192 bytes; the cap only bounds a mistaken size). */
const MAX_ROWS = 1024;

/** What a worker receives in its workerData: the whole buffer and the row it owns. */
export interface CounterRowRef {
  buffer: SharedArrayBuffer;
  row: number;
}

/**
 * The rows of every worker slot, owned by the main thread. A row belongs to a slot, not to a thread: a worker
 * that replaces a stopped one in the same slot gets the same row and counts on from where it stopped, so a
 * restart never makes a total go down. One writer per row at a time: a slot's next worker is started only after
 * the previous one exited.
 */
export class SharedCounters {
  readonly buffer: SharedArrayBuffer;
  readonly rows: number;
  readonly #values: Float64Array;

  constructor(rows: number) {
    if (!Number.isInteger(rows) || rows < 1 || rows > MAX_ROWS) {
      throw new AmbitError("counters_bad_rows", `counter rows must be an integer in 1..${MAX_ROWS}, got ${rows}`);
    }
    this.rows = rows;
    this.buffer = new SharedArrayBuffer(rows * ROW_STRIDE * Float64Array.BYTES_PER_ELEMENT);
    this.#values = new Float64Array(this.buffer);
  }

  /** What to put in the workerData of the worker serving slot `row`. */
  rowRef(row: number): CounterRowRef {
    checkRow(row, this.rows);
    return { buffer: this.buffer, row };
  }

  /** Counter `index` of worker `row` now (a plain load; see the file comment for why it cannot be torn). */
  value(row: number, index: number): number {
    return this.#values[row * ROW_STRIDE + index] ?? 0;
  }

  /** Counter `index` summed over every worker. */
  sum(index: number): number {
    let total = 0;
    for (let row = 0; row < this.rows; row++) total += this.#values[row * ROW_STRIDE + index] ?? 0;
    return total;
  }
}

/** A worker's own row: the only writer of it. */
export class WorkerCounters {
  readonly #row: Float64Array;

  constructor(ref: CounterRowRef) {
    const rows = ref.buffer.byteLength / (ROW_STRIDE * Float64Array.BYTES_PER_ELEMENT);
    checkRow(ref.row, rows);
    this.#row = new Float64Array(ref.buffer, ref.row * ROW_STRIDE * Float64Array.BYTES_PER_ELEMENT, ROW_STRIDE);
  }

  /** Counters for a relay that no metrics exporter reads (a single-threaded tool or test): a row of its own. */
  static standalone(): WorkerCounters {
    return new WorkerCounters(new SharedCounters(1).rowRef(0));
  }

  /** Adds 1 to counter `index` (a COUNTER constant). */
  inc(index: number): void {
    this.#row[index]++;
  }

  /** Adds `n` (>= 0) to counter `index`. */
  add(index: number, n: number): void {
    this.#row[index] += n;
  }

  get(index: number): number {
    return this.#row[index] ?? 0;
  }
}

function checkRow(row: number, rows: number): void {
  if (!Number.isInteger(row) || row < 0 || row >= rows) {
    throw new AmbitError("counters_bad_row", `counter row ${row} is not one of 0..${rows - 1}`);
  }
}
