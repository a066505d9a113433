/**
 * Connection limits per pod and per agent, held across worker threads. Every connection a worker accepts on a pod's
 * listener (15001, 15006, 15008) and every HBONE stream it serves for a pod counts against that pod and the agent
 * until its socket is closed; past either limit the new connection is refused.
 *
 * Shared memory, not a split per worker: a pod's listeners are shared by every worker and whichever wakes first
 * accepts (listener.ts), so a pod's connections can sit on any mix of workers; a per-worker share (limit/N) would
 * refuse a pod whose connections happen to gather on one worker long before the pod reaches its limit. One Int32
 * per pod slot and one for the agent, changed with Atomics.add/sub (10-22 ns each, shared-counters.ts's
 * measurement): two per connection opened and two per connection closed, beside microseconds of syscalls.
 *
 * A connection is released when its socket is closed (closeSocket in fd.ts), wherever that happens: the admitted
 * socket is remembered by fd number in this thread's table. Fd numbers are the kernel's lowest free ones, so a
 * number is reused soon after its close; a socket admitted under a number still in the table releases the older
 * entry first, so a close that bypassed closeSocket costs a slot only until its number comes back.
 */
import { AmbitError } from "../errors.js";
import type { LineLog } from "../log.js";
import type { LogThrottle } from "../log-throttle.js";

export type LimitReason = "pod_connection_limit" | "agent_connection_limit";

/** Pods one agent can hold a slot for: far above a node's pod count (Kubernetes' default is 110, its tested maximum 250). */
export const MAX_POD_SLOTS = 4096;

/**
 * Connections per pod by default: twice the 10,000 concurrent connections to one pod that the data path is held to
 * (test/netns/proxy-scale.test.ts: 10,000 streams plus the sessions carrying them), so a pod serving that load is
 * never refused, while one pod alone cannot take every descriptor of a large node.
 */
export const DEFAULT_PER_POD_LIMIT = 20_000;

/** Connections per agent at most by default, whatever the descriptor limit allows (memory: see agentLimitFor). */
export const MAX_DEFAULT_AGENT_LIMIT = 100_000;

/**
 * The agent's default connection limit for a descriptor limit (RLIMIT_NOFILE, soft: Node raises it to the hard
 * limit at start): what is left after a reserve of a quarter of the limit, at most 4096, for what the agent opens
 * besides connections (six listeners and two namespace descriptors per pod, its API watches, CA and metrics
 * sockets, epoll fds). One descriptor per counted connection, as HBONE uses them: an accepted 15001 socket (its
 * session's fd is shared by every stream), a 15008 session, a stream's app socket. A passthrough connection holds
 * two (the accepted socket and the upstream one), so a node of mostly passthrough traffic can still run out of
 * descriptors first; that is survived (accept pauses, fd-exhaustion.ts logs it). Half, to rule EMFILE out, would
 * refuse 10,000 HBONE connections at a 20,000 descriptor limit that serves them (proxy-scale). Capped at 100,000:
 * a connection held in its TLS handshake cost ~55 KiB of RSS (test/netns/overload.test.ts: 2,000 took 108 MiB,
 * the attacker's own sockets in the same process included), so 100,000 is ~5 GB, more than a node agent should
 * take. Examples: 1,048,576 (containerd's default) -> 100,000; 65,536 -> 61,440; 20,000 -> 15,904; 1,024 -> 768.
 */
export function agentLimitFor(nofile: bigint | number): number {
  const limit = Number(nofile);
  if (!Number.isFinite(limit) || limit <= 0) return MAX_DEFAULT_AGENT_LIMIT;
  const reserve = Math.min(4096, Math.floor(limit / 4));
  return Math.max(1, Math.min(MAX_DEFAULT_AGENT_LIMIT, limit - reserve));
}

/** What a worker receives: the shared counts and the limits. Int32 slot 0 is the agent's, 1 + s is pod slot s's. */
export interface ConnectionLimitsRef {
  buffer: SharedArrayBuffer;
  perPod: number;
  perAgent: number;
}

function checkLimit(n: number, what: string): number {
  if (!Number.isInteger(n) || n < 1 || n > 2 ** 31 - 1) {
    throw new AmbitError("bad_connection_limit", `${what} must be a whole number from 1 to 2147483647, got ${n}`);
  }
  return n;
}

/**
 * The main thread's side: owns the shared counts and gives each enrolled pod a slot for as long as workers may
 * count into it.
 */
export class ConnectionLimitTable {
  readonly perPod: number;
  readonly perAgent: number;
  readonly #buffer: SharedArrayBuffer;
  readonly #counts: Int32Array;
  readonly #slots = new Map<string, number>();
  readonly #free: number[] = [];

  constructor(limits: { perPod: number; perAgent: number }, slots = MAX_POD_SLOTS) {
    this.perPod = checkLimit(limits.perPod, "the per-pod connection limit");
    this.perAgent = checkLimit(limits.perAgent, "the per-agent connection limit");
    this.#buffer = new SharedArrayBuffer((1 + slots) * Int32Array.BYTES_PER_ELEMENT);
    this.#counts = new Int32Array(this.#buffer);
    for (let s = slots - 1; s >= 0; s--) this.#free.push(s);
  }

  ref(): ConnectionLimitsRef {
    return { buffer: this.#buffer, perPod: this.perPod, perAgent: this.perAgent };
  }

  /**
   * The slot of pod `key`, a new one on its first call; -1 when every slot is taken (that pod is held only to the
   * agent's limit). A freed slot may still count connections of its previous pod that are closing; one that counts
   * none is preferred, so a new pod does not start with another's remainder.
   */
  assign(key: string): number {
    const known = this.#slots.get(key);
    if (known !== undefined) return known;
    if (this.#free.length === 0) return -1;
    let pick = this.#free.length - 1;
    for (let i = pick; i >= 0; i--) {
      if (Atomics.load(this.#counts, 1 + (this.#free[i] as number)) === 0) {
        pick = i;
        break;
      }
    }
    const slot = this.#free.splice(pick, 1)[0] as number;
    this.#slots.set(key, slot);
    return slot;
  }

  /** The pod left and every worker was told: its slot may go to another pod (its connections release as they close). */
  release(key: string): void {
    const slot = this.#slots.get(key);
    if (slot === undefined) return;
    this.#slots.delete(key);
    this.#free.unshift(slot);
  }

  /** Connections counted against the agent now. */
  get live(): number {
    return Atomics.load(this.#counts, 0);
  }

  /** Connections counted against pod `key` now (0 for a pod without a slot). */
  podLive(key: string): number {
    const slot = this.#slots.get(key);
    return slot === undefined ? 0 : Atomics.load(this.#counts, 1 + slot);
  }
}

/** An admitted socket: where to give its count back. */
interface Admitted {
  counts: Int32Array;
  slot: number;
}

/** This thread's admitted sockets by fd number (a worker's module instance is its own). */
const admitted = new Map<number, Admitted>();

/** The socket `fd` was closed: its connection no longer counts. Called by closeSocket (fd.ts) for every socket. */
export function socketClosed(fd: number): void {
  const entry = admitted.get(fd);
  if (entry === undefined) return;
  admitted.delete(fd);
  giveBack(entry.counts, entry.slot);
}

function giveBack(counts: Int32Array, slot: number): void {
  Atomics.sub(counts, 0, 1);
  if (slot >= 0) Atomics.sub(counts, 1 + slot, 1);
}

/** A worker's side: the pods it serves by slot, and admission against the shared counts. */
export class ConnectionLimits {
  readonly perPod: number;
  readonly perAgent: number;
  readonly #counts: Int32Array;
  readonly #slots = new Map<string, number>();

  constructor(ref: ConnectionLimitsRef) {
    this.perPod = checkLimit(ref.perPod, "the per-pod connection limit");
    this.perAgent = checkLimit(ref.perAgent, "the per-agent connection limit");
    this.#counts = new Int32Array(ref.buffer);
  }

  /** Limits of their own, for a single-threaded relay or test: `limits` or none that a test could reach. */
  static standalone(limits: { perPod?: number; perAgent?: number } = {}): ConnectionLimits {
    const max = 2 ** 31 - 1;
    const table = new ConnectionLimitTable({ perPod: limits.perPod ?? max, perAgent: limits.perAgent ?? max }, 64);
    return new ConnectionLimits(table.ref());
  }

  setPod(key: string, slot: number): void {
    this.#slots.set(key, slot);
  }

  forgetPod(key: string): void {
    this.#slots.delete(key);
  }

  /**
   * Counts one more connection for pod `key`, or returns why it may not be made (nothing counted then). The caller
   * hands the count to a socket (track) or gives it back (release). The pod is checked first: a pod at its own
   * limit is that pod's doing, whoever else is connected.
   */
  acquire(key: string): LimitReason | undefined {
    const slot = this.#slots.get(key) ?? -1;
    const counts = this.#counts;
    if (slot >= 0 && Atomics.add(counts, 1 + slot, 1) >= this.perPod) {
      Atomics.sub(counts, 1 + slot, 1);
      return "pod_connection_limit";
    }
    if (Atomics.add(counts, 0, 1) >= this.perAgent) {
      Atomics.sub(counts, 0, 1);
      if (slot >= 0) Atomics.sub(counts, 1 + slot, 1);
      return "agent_connection_limit";
    }
    return undefined;
  }

  /** Gives back a count acquire() took for `key` that no socket holds (no socket could be made for it). */
  release(key: string): void {
    giveBack(this.#counts, this.#slots.get(key) ?? -1);
  }

  /** The count acquire() took for `key` is `fd`'s now: released when closeSocket closes it. */
  track(fd: number, key: string): void {
    const previous = admitted.get(fd);
    if (previous !== undefined) giveBack(previous.counts, previous.slot);
    admitted.set(fd, { counts: this.#counts, slot: this.#slots.get(key) ?? -1 });
  }

  /** acquire() and track() for an accepted socket; on refusal nothing is counted and the caller refuses `fd`. */
  admit(fd: number, key: string): LimitReason | undefined {
    const refused = this.acquire(key);
    if (refused === undefined) this.track(fd, key);
    return refused;
  }

  /**
   * Logs a refusal at a limit, at most once per pod (per agent, for the agent's limit) and throttle interval: a
   * flood of connections must not become a flood of log lines.
   */
  logRefusal(throttle: LogThrottle, log: LineLog, key: string, listener: string, reason: LimitReason): void {
    const agentWide = reason === "agent_connection_limit";
    throttle.hit(agentWide ? reason : `${key}|${reason}`, (suppressed) =>
      log.warn(
        {
          reason,
          listener,
          limit: agentWide ? this.perAgent : this.perPod,
          live: agentWide ? this.live : this.podLive(key),
          suppressed,
        },
        agentWide
          ? "the agent's connection limit is reached; new connections to every pod are refused until some close"
          : "the pod's connection limit is reached; its new connections are refused until some close",
      ),
    );
  }

  /** Connections counted against the agent now (every worker's). */
  get live(): number {
    return Atomics.load(this.#counts, 0);
  }

  /** Connections counted against pod `key` now (every worker's). */
  podLive(key: string): number {
    const slot = this.#slots.get(key) ?? -1;
    return slot < 0 ? 0 : Atomics.load(this.#counts, 1 + slot);
  }
}
