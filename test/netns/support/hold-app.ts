/**
 * An app for connection-count tests, run as its own process inside a pod's namespace (`node hold-app.js IP PORT COUNT`,
 * with an IPC channel): it answers each connection's first line (a client's index) with that index and the
 * address the connection came from, then holds the connection until the client ends it. A process of its own, so
 * that a test holding 10,000 client sockets does not also hold the 10,000 server ends within one descriptor limit.
 *
 * IPC: sends { listening: true } once it accepts; answers "status" with an AppStatus. Exits when its parent goes.
 */
import net from "node:net";

export interface AppStatus {
  /** Connections open now, and the most open at once. */
  open: number;
  peak: number;
  /** Distinct indexes of 0..COUNT-1 answered (others, a test's warm-up, are answered but not counted). */
  answered: number;
  /** The first few things that went wrong (an index twice, a second line, a socket error). */
  problems: string[];
}

const [ip, port, count] = process.argv.slice(2);
const status: AppStatus = { open: 0, peak: 0, answered: 0, problems: [] };
const answered = new Set<number>();
const problem = (what: string) => {
  if (status.problems.length < 20) status.problems.push(what);
};

const server = net.createServer({ allowHalfOpen: true }, (s) => {
  status.open += 1;
  status.peak = Math.max(status.peak, status.open);
  let line = "";
  s.setEncoding("latin1");
  s.on("data", (chunk: string) => {
    if (line.endsWith("\n")) {
      problem(`more than one line from ${s.remoteAddress}:${s.remotePort}`);
      return;
    }
    line += chunk;
    if (!line.endsWith("\n")) return;
    const index = Number(line.slice(0, -1));
    if (answered.has(index)) problem(`index ${index} twice`);
    answered.add(index);
    if (index >= 0 && index < Number(count)) status.answered += 1;
    s.write(`${index} from ${s.remoteAddress}\n`);
  });
  s.on("end", () => s.end());
  s.on("error", (err: Error) => problem(`app socket: ${err.message}`));
  s.on("close", () => {
    status.open -= 1;
  });
});
server.listen({ host: ip, port: Number(port), backlog: 4096 }, () => process.send?.({ listening: true }));
process.on("message", (m) => {
  if (m === "status") process.send?.(status);
});
process.on("disconnect", () => process.exit(0));
