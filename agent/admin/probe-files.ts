/**
 * Probe files for the kubelet's exec probes (--probe-dir). Two agents share the node's network during an upgrade
 * (hostNetwork, DaemonSet maxSurge 1): an HTTP probe on the node's port would reach whichever agent holds it, the
 * old one until it exits, so the new agent's readiness could not be seen. A file in the container's own filesystem
 * is this agent's alone. `ready` exists while the readiness check passes; `alive` is rewritten every interval from
 * the main thread's event loop, so a liveness probe that finds it stale has found the loop stuck.
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../log.js";

/** How often the files are brought up to date; the DaemonSet's probes allow 30 s of staleness. */
export const PROBE_INTERVAL_MS = 1000;

export class ProbeFiles {
  readonly #dir: string;
  readonly #ready: () => boolean;
  readonly #log: Logger;
  readonly #timer: NodeJS.Timeout;
  #draining = false;
  #failing = false;

  constructor(dir: string, ready: () => boolean, log: Logger) {
    this.#dir = dir;
    this.#ready = ready;
    this.#log = log;
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    // A file left by an earlier process in this container (a restart) says nothing about this one.
    rmSync(join(dir, "ready"), { force: true });
    this.#update();
    this.#timer = setInterval(() => this.#update(), PROBE_INTERVAL_MS);
    this.#timer.unref();
  }

  /** Not ready from now on (draining, stopping); `alive` stays until close. */
  notReady(): void {
    this.#draining = true;
    this.#update();
  }

  close(): void {
    clearInterval(this.#timer);
    rmSync(join(this.#dir, "ready"), { force: true });
    rmSync(join(this.#dir, "alive"), { force: true });
  }

  #update(): void {
    try {
      writeFileSync(join(this.#dir, "alive"), `${new Date().toISOString()}\n`);
      if (!this.#draining && this.#ready()) writeFileSync(join(this.#dir, "ready"), "ready\n");
      else rmSync(join(this.#dir, "ready"), { force: true });
      this.#failing = false;
    } catch (err) {
      if (!this.#failing) {
        this.#log.error(
          { err, dir: this.#dir },
          "cannot write the probe files; the kubelet will see this agent as not ready",
        );
      }
      this.#failing = true;
    }
  }
}
