/**
 * Keeps a log line that hostile input can trigger at will to one per key and interval: the first occurrence is
 * logged, the next ones are only counted and reported with the following line (`suppressed`). Keys are bounded so
 * the table cannot grow with hostile input either; past the bound the oldest key is forgotten.
 */
export class LogThrottle {
  readonly #intervalMs: number;
  readonly #maxKeys: number;
  readonly #keys = new Map<string, { until: number; suppressed: number }>();

  constructor(options: { intervalMs?: number; maxKeys?: number } = {}) {
    this.#intervalMs = options.intervalMs ?? 10_000;
    this.#maxKeys = options.maxKeys ?? 1024;
  }

  /** Runs `emit(suppressed)` unless `key` was emitted less than an interval ago; then counts it instead. */
  hit(key: string, emit: (suppressed: number) => void, now = Date.now()): void {
    const entry = this.#keys.get(key);
    if (entry && now < entry.until) {
      entry.suppressed += 1;
      return;
    }
    const suppressed = entry?.suppressed ?? 0;
    this.#keys.delete(key);
    if (this.#keys.size >= this.#maxKeys) {
      const oldest = this.#keys.keys().next().value;
      if (oldest !== undefined) this.#keys.delete(oldest);
    }
    this.#keys.set(key, { until: now + this.#intervalMs, suppressed: 0 });
    emit(suppressed);
  }
}
