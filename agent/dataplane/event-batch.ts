/**
 * How a worker reports what it sees without a message per connection: events (handshakes, connections opened,
 * closed, refused, log lines) queue in the worker and go to the main thread as one message per EVENT_FLUSH_MS, or
 * sooner once EVENT_BATCH_MAX are queued. The main thread replays them into the agent's observers (metrics, access
 * log, connection table) and its own logger, in the order each worker saw them.
 */
import type { LineLog, Logger } from "../log.js";
import type { ConnectionEnd, ConnectionInfo, Denial, HandshakeRole, ProxyObserver } from "../proxy/observer.js";
import type { HandshakeResult, RefusalReason } from "../proxy/reasons.js";
import { LOG_LEVELS, workerLog } from "./worker-log.js";
import type { WorkerEvent, WorkerEvents } from "./worker-protocol.js";

/** A finished connection shows in the access log and istio_tcp_* at most this late. */
export const EVENT_FLUSH_MS = 50;
export const EVENT_BATCH_MAX = 512;
/** A level's name by its number, for the main thread's logger. */
const LEVEL_NAMES = new Map<number, string>(Object.entries(LOG_LEVELS).map(([name, n]) => [n, name]));

export class WorkerEventBatch implements ProxyObserver {
  readonly #post: (message: WorkerEvents) => void;
  #events: WorkerEvent[] = [];
  #timer: NodeJS.Timeout | undefined;

  constructor(post: (message: WorkerEvents) => void) {
    this.#post = post;
  }

  handshake(role: HandshakeRole, result: HandshakeResult, seconds: number): void {
    this.#push({ e: "handshake", role, result, seconds });
  }

  connectionOpened(info: ConnectionInfo): void {
    this.#push({ e: "opened", info });
  }

  connectionClosed(info: ConnectionInfo, end: ConnectionEnd): void {
    this.#push({ e: "closed", info, end });
  }

  connectionRefused(pod: string, direction: "outbound" | "inbound", reason: RefusalReason): void {
    this.#push({ e: "refused", pod, direction, reason });
  }

  connectionDenied(info: ConnectionInfo, denial: Denial): void {
    this.#push({ e: "denied", info, denial });
  }

  /** A logger whose lines travel with the events (JSON in pino's shape, re-logged by the main thread's logger). */
  logger(level: string): LineLog {
    return workerLog(level, (line, n) => {
      this.#push({ e: "log", line });
      // Errors go at once: the line may be the last thing a failing thread says.
      if (n >= LOG_LEVELS.error) this.flush();
    });
  }

  /** Sends what is queued now (the worker is stopping, or a test wants it). */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#events.length === 0) return;
    const events = this.#events;
    this.#events = [];
    this.#post({ type: "events", events });
  }

  #push(event: WorkerEvent): void {
    this.#events.push(event);
    if (this.#events.length >= EVENT_BATCH_MAX) this.flush();
    else this.#timer ??= setTimeout(() => this.flush(), EVENT_FLUSH_MS);
  }
}

/** The main thread's side: each event to the observer, each log line to `log` at its level. */
export function replayEvents(events: WorkerEvent[], observer: ProxyObserver, log: Logger): void {
  for (const ev of events) {
    switch (ev.e) {
      case "handshake":
        observer.handshake(ev.role, ev.result, ev.seconds);
        break;
      case "opened":
        observer.connectionOpened(ev.info);
        break;
      case "closed":
        observer.connectionClosed(ev.info, ev.end);
        break;
      case "refused":
        observer.connectionRefused(ev.pod, ev.direction, ev.reason);
        break;
      case "denied":
        observer.connectionDenied(ev.info, ev.denial);
        break;
      case "log":
        relog(ev.line, log);
        break;
    }
  }
}

function relog(line: string, log: Logger): void {
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return;
  }
  const { level, msg, ...fields } = parsed;
  const label = LEVEL_NAMES.get(Number(level)) ?? "info";
  const write = (log as unknown as Record<string, (obj: object, msg: string) => void>)[label];
  write?.call(log, fields, String(msg ?? ""));
}
