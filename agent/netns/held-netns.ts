import { closeFdQuietly } from "../../native-bindings/libc.js";
import type { HeldNetnsRef } from "../pod-netns.js";
import { NetnsReleasedError } from "./errors.js";

/**
 * A pod's network namespace, held open by descriptor while the pod is enrolled (netns-registry.ts owns it). Once
 * closed, reading `fd` throws: the number may by then belong to another file, even another pod's namespace.
 */
export class HeldNetns implements HeldNetnsRef {
  readonly podKey: string;
  readonly podUid: string;
  readonly inode: number;
  /** Found by a /proc scan, or opened at the path the pod record gives. */
  readonly source: "scan" | "path";
  /** The record's path, or the /proc entry the namespace was first opened through. */
  readonly openedAt: string;
  #ips: readonly string[];
  #pid: number | undefined;
  #fd: number | undefined;

  constructor(init: {
    podKey: string;
    podUid: string;
    fd: number;
    inode: number;
    source: "scan" | "path";
    openedAt: string;
    ips: readonly string[];
    pid?: number;
  }) {
    this.podKey = init.podKey;
    this.podUid = init.podUid;
    this.#fd = init.fd;
    this.inode = init.inode;
    this.source = init.source;
    this.openedAt = init.openedAt;
    this.#ips = init.ips;
    this.#pid = init.pid;
  }

  /** The pod IPs (canonical, see wantedIps) of the record it was last resolved for. */
  get ips(): readonly string[] {
    return this.#ips;
  }

  /** A process last seen in the namespace (scan only): checking that it is still there is the cheap liveness test. */
  get pid(): number | undefined {
    return this.#pid;
  }

  /** The registry resolved the same namespace again, for these IPs, seen through `pid`. */
  refresh(ips: readonly string[], pid?: number): void {
    this.#ips = ips;
    this.#pid = pid ?? this.#pid;
  }

  get fd(): number {
    if (this.#fd === undefined) throw new NetnsReleasedError(this.description);
    return this.#fd;
  }

  get released(): boolean {
    return this.#fd === undefined;
  }

  get description(): string {
    return `network namespace net:[${this.inode}] of pod ${this.podKey} (${this.openedAt})`;
  }

  /** Closes the descriptor; only the first call closes anything. Callers release through the registry instead. */
  close(): void {
    const fd = this.#fd;
    if (fd === undefined) return;
    this.#fd = undefined;
    closeFdQuietly(fd);
  }
}
