/**
 * Effects side of cpu-attribution.ts: every window, read the process CPU clock and the activity counts, update the
 * model over the recent windows, and publish per-handshake / per-GiB costs and the attributed CPU seconds.
 */
import { Counter, Gauge, type Registry } from "prom-client";
import { attributeWindow, type CpuWindow, fitCpuModel } from "./cpu-attribution.js";

export interface CpuSamplerOptions {
  registry: Registry;
  /** Window length; short enough to see load change, long enough that a window holds some work. */
  windowMs?: number;
  /** Windows kept for the fit (the model follows the last windowMs * history of load). */
  history?: number;
}

export class CpuSampler {
  #handshakes = 0;
  #bytes = 0;
  #last = process.cpuUsage();
  readonly #windows: CpuWindow[] = [];
  readonly #history: number;
  readonly #timer: NodeJS.Timeout;
  readonly #attributed: Counter<"activity">;
  readonly #perHandshake: Gauge;
  readonly #perGiB: Gauge;

  constructor(options: CpuSamplerOptions) {
    const registers = [options.registry];
    this.#history = options.history ?? 120;
    this.#attributed = new Counter({
      name: "ambit_cpu_attributed_seconds_total",
      help: "Process CPU seconds split between TLS handshakes, proxied traffic and everything else (cost model share)",
      labelNames: ["activity"],
      registers,
    });
    for (const activity of ["handshake", "traffic", "other"]) this.#attributed.inc({ activity }, 0);
    this.#perHandshake = new Gauge({
      name: "ambit_cpu_seconds_per_handshake",
      help: "Estimated CPU seconds one TLS handshake costs (least-squares fit over recent windows)",
      registers,
    });
    this.#perGiB = new Gauge({
      name: "ambit_cpu_seconds_per_gib",
      help: "Estimated CPU seconds one GiB of proxied traffic costs (least-squares fit over recent windows)",
      registers,
    });
    this.#timer = setInterval(() => this.sample(), options.windowMs ?? 5000);
    this.#timer.unref();
  }

  handshake(): void {
    this.#handshakes += 1;
  }

  bytes(n: number): void {
    this.#bytes += n;
  }

  /** Close the current window (the timer calls this; tests may too). */
  sample(): void {
    const delta = process.cpuUsage(this.#last);
    this.#last = process.cpuUsage();
    const window: CpuWindow = {
      cpuSeconds: (delta.user + delta.system) / 1e6,
      handshakes: this.#handshakes,
      bytes: this.#bytes,
    };
    this.#handshakes = 0;
    this.#bytes = 0;
    this.#windows.push(window);
    if (this.#windows.length > this.#history) this.#windows.shift();
    const model = fitCpuModel(this.#windows);
    this.#perHandshake.set(model.perHandshake);
    this.#perGiB.set(model.perGiB);
    const shares = attributeWindow(window, model);
    this.#attributed.inc({ activity: "handshake" }, shares.handshake);
    this.#attributed.inc({ activity: "traffic" }, shares.traffic);
    this.#attributed.inc({ activity: "other" }, shares.other);
  }

  close(): void {
    clearInterval(this.#timer);
  }
}
