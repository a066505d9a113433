/**
 * Remembers which label sets were written for which workload, so that a workload's series can be removed when its
 * last pod leaves this node (prom-client removes series by exact label set only). Pure bookkeeping.
 */
export class SeriesIndex<L extends Record<string, string>> {
  /** Serialized label set -> the label set; one entry per live series. */
  readonly #series = new Map<string, L>();
  /** Workload key -> serialized label sets naming it. */
  readonly #byWorkload = new Map<string, Set<string>>();

  constructor(private readonly workloadsOf: (labels: L) => readonly string[]) {}

  /** Record that `labels` now has a series. Cheap when it already has one (the common case). */
  add(labels: L): void {
    const key = JSON.stringify(labels);
    if (this.#series.has(key)) return;
    this.#series.set(key, labels);
    for (const w of this.workloadsOf(labels)) {
      let set = this.#byWorkload.get(w);
      if (!set) {
        set = new Set();
        this.#byWorkload.set(w, set);
      }
      set.add(key);
    }
  }

  /** Forget and return every label set naming `workload` (on either side). */
  take(workload: string): L[] {
    const keys = this.#byWorkload.get(workload);
    if (!keys) return [];
    const out: L[] = [];
    for (const key of keys) {
      const labels = this.#series.get(key);
      if (!labels) continue;
      out.push(labels);
      this.#series.delete(key);
      for (const w of this.workloadsOf(labels)) this.#byWorkload.get(w)?.delete(key);
    }
    for (const w of [...this.#byWorkload.keys()]) if (this.#byWorkload.get(w)?.size === 0) this.#byWorkload.delete(w);
    return out;
  }

  get size(): number {
    return this.#series.size;
  }
}
