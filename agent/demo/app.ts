/**
 * The demo's stand-in for application containers, run inside pod namespaces (nothing here knows about the mesh):
 *   node app.js serve <port> <pod-name>   HTTP server answering who it is and whom it sees as the caller
 *   node app.js get <url> [timeout-ms]    one GET on a fresh connection; prints the body, exit 1 on any failure
 */
import http from "node:http";

function serve(port: number, name: string): void {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end(`hello from ${name}; caller address as the app sees it: ${req.socket.remoteAddress}\n`);
  });
  // keepAlive off: every GET is one TCP connection, so each shows up as one row in the agents' connection tables.
  server.keepAliveTimeout = 0;
  server.listen(port, "0.0.0.0", () => process.stdout.write(`listening on ${port}\n`));
  process.once("SIGTERM", () => process.exit(0));
}

function get(url: string, timeoutMs: number): void {
  const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
    let body = "";
    res.setEncoding("utf8");
    res.on("data", (c: string) => {
      body += c;
    });
    res.on("end", () => {
      if (res.statusCode !== 200) {
        process.stderr.write(`HTTP ${res.statusCode}\n`);
        process.exit(1);
      }
      process.stdout.write(body);
      process.exit(0);
    });
  });
  req.on("timeout", () =>
    req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: "TIMEOUT" })),
  );
  req.on("error", (err: NodeJS.ErrnoException) => {
    process.stderr.write(`${err.code ?? "ERROR"}: ${err.message}\n`);
    process.exit(1);
  });
}

const [mode, a, b] = process.argv.slice(2);
if (mode === "serve" && a && b) serve(Number(a), b);
else if (mode === "get" && a) get(a, Number(b ?? 3000));
else {
  process.stderr.write("usage: app.js serve <port> <name> | get <url> [timeout-ms]\n");
  process.exit(2);
}
