/**
 * A reference for any proxy written for Node.js, run by proxy-bench as its "js-relay" mode: a bare TCP relay with
 * no TLS, no HTTP/2, no policy and no metrics, only Node's own sockets and `pipe`. Two of them (one per node) take
 * the same path as two ambit agents, with one more TCP connection per app connection (the middle hop is a new
 * connection where ambit opens a stream on a pooled one). Where these two cannot reach a target, a proxy built on
 * Node's sockets is unlikely to.
 *
 *   js-relay LISTEN_HOST:PORT=TARGET_HOST:PORT ...
 */
import net from "node:net";

function endpoint(text: string): { host: string; port: number } {
  const at = text.lastIndexOf(":");
  const port = Number(text.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port)) throw new Error(`not HOST:PORT: ${text}`);
  return { host: text.slice(0, at), port };
}

for (const arg of process.argv.slice(2)) {
  const [from, to] = arg.split("=");
  if (!from || !to) throw new Error(`usage: js-relay LISTEN_HOST:PORT=TARGET_HOST:PORT ...; got ${arg}`);
  const target = endpoint(to);
  const listen = endpoint(from);
  net
    .createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
      const upstream = net.connect({ ...target, allowHalfOpen: true, noDelay: true });
      // An error on one side ends both: the relay never keeps a half it cannot deliver.
      client.on("error", () => upstream.destroy());
      upstream.on("error", () => client.destroy());
      client.pipe(upstream);
      upstream.pipe(client);
    })
    .listen({ ...listen, backlog: 4096 });
}
