/**
 * A worker thread for connection-limits.test.ts: waits for the go flag, churns (takes and gives back one connection
 * of each pod `churn` times: a count that lost an update to the other thread's would not come back to 0), then asks
 * for `attempts` connections, round robin over `pods`, and posts how many each pod got and why the others were
 * refused. On "release" it gives every count back and posts "released".
 */
import { parentPort, workerData } from "node:worker_threads";
import { ConnectionLimits, type ConnectionLimitsRef } from "../../../../agent/dataplane/connection-limits.js";

export interface RacerData {
  ref: ConnectionLimitsRef;
  pods: Array<[string, number]>;
  attempts: number;
  churn: number;
  go: SharedArrayBuffer;
}

export interface RacerTally {
  admitted: Record<string, number>;
  refused: Record<string, number>;
}

const data = workerData as RacerData | null;
if (data && parentPort) {
  const port = parentPort;
  const limits = new ConnectionLimits(data.ref);
  for (const [key, slot] of data.pods) limits.setPod(key, slot);
  const go = new Int32Array(data.go);
  Atomics.add(go, 1, 1);
  // Spinning, not waiting: both threads start within nanoseconds of each other, so their updates meet.
  while (Atomics.load(go, 0) === 0);
  for (let i = 0; i < data.churn; i++) {
    const key = (data.pods[i % data.pods.length] as [string, number])[0];
    if (limits.acquire(key) === undefined) limits.release(key);
  }
  const tally: RacerTally = { admitted: {}, refused: {} };
  const held: string[] = [];
  for (let i = 0; i < data.attempts; i++) {
    const key = (data.pods[i % data.pods.length] as [string, number])[0];
    const refused = limits.acquire(key);
    if (refused === undefined) {
      held.push(key);
      tally.admitted[key] = (tally.admitted[key] ?? 0) + 1;
    } else tally.refused[refused] = (tally.refused[refused] ?? 0) + 1;
  }
  port.postMessage(tally);
  port.once("message", () => {
    for (const key of held) limits.release(key);
    port.postMessage("released");
  });
}
