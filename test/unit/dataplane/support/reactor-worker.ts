/**
 * A worker thread for reactor.test.ts: one Reactor watching an eventfd. Posts {eventfd} once ready, {events} for
 * each wake-up, and on "stop" removes and closes the eventfd, closes the reactor and lets the thread end.
 */
import { parentPort } from "node:worker_threads";
import { Reactor } from "../../../../agent/dataplane/reactor.js";
import { closeFd, EPOLLIN, eventfd, read } from "../../../../native-bindings/io.js";

const port = parentPort;
if (!port) throw new Error("run as a worker");
const reactor = new Reactor();
const efd = eventfd();
const counter = Buffer.alloc(8);
const token = reactor.add(efd, EPOLLIN, {
  onEvents(events) {
    read(efd, counter, 8);
    port.postMessage({ events, value: Number(counter.readBigUInt64LE(0)) });
  },
});
port.on("message", async (message) => {
  if (message !== "stop") return;
  reactor.remove(token);
  closeFd(efd);
  await reactor.close();
  port.close();
});
port.postMessage({ eventfd: efd });
