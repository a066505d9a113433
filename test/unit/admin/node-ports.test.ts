import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { HttpServeError, serveRoutes } from "../../../agent/admin/http-server.js";
import { ProbeFiles } from "../../../agent/admin/probe-files.js";
import { silentLogger } from "../../../agent/log.js";

/** A plain TCP server holding a loopback port, as the previous agent holds the node's ports during an upgrade. */
async function holder(): Promise<{ port: number; release(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.end("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nold");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    release: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}

async function get(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/who`, { signal: AbortSignal.timeout(2000) });
  return res.text();
}

async function until(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return false;
}

const routes = { "/who": () => ({ status: 200, body: "new" }) };

test("a port held by another process fails the start, unless told to wait for it", async (t) => {
  const { port, release } = await holder();
  t.teardown(release);
  const error = await t.throwsAsync(serveRoutes("metrics", `127.0.0.1:${port}`, routes));
  t.true(error instanceof HttpServeError);
  t.is((error as HttpServeError).code, "listen_failed");
});

test("waiting for a port: the holder answers until it lets go, then this server does", async (t) => {
  const { port, release } = await holder();
  const served = await serveRoutes("metrics", `127.0.0.1:${port}`, routes, {
    waitWhileBusy: { logger: silentLogger, retryMs: 20 },
  });
  t.teardown(() => served.close());
  t.is(served.address, `127.0.0.1:${port}`, "the address it will serve on");
  t.is(await get(port), "old", "the previous process still has the port");
  await release();
  t.true(await until(async () => (await get(port)) === "new", 3000), "taken within 3 s of being freed");
});

test("waiting for a port that is never freed: close stops the retries and leaves the port alone", async (t) => {
  const { port, release } = await holder();
  const served = await serveRoutes("admin", `127.0.0.1:${port}`, routes, {
    waitWhileBusy: { logger: silentLogger, retryMs: 10 },
  });
  await served.close();
  await release();
  await new Promise((r) => setTimeout(r, 100));
  await t.throwsAsync(get(port), undefined, "nobody took the port after close");
});

test("probe files: ready exists exactly while the check passes, alive is rewritten, draining is never ready", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "ambit-probes-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  let ready = false;
  const probes = new ProbeFiles(dir, () => ready, silentLogger);
  t.teardown(() => probes.close());
  const file = (name: string) => join(dir, name);
  t.true(existsSync(file("alive")));
  t.false(existsSync(file("ready")), "not ready at start");
  const first = readFileSync(file("alive"), "utf8");
  ready = true;
  t.true(await until(async () => existsSync(file("ready")), 3000), "ready once the check passes");
  t.not(readFileSync(file("alive"), "utf8"), first, "alive rewritten each interval");
  ready = false;
  t.true(await until(async () => !existsSync(file("ready")), 3000), "not ready again when it fails");
  ready = true;
  t.true(await until(async () => existsSync(file("ready")), 3000));
  probes.notReady();
  t.false(existsSync(file("ready")), "draining: not ready at once");
  await new Promise((r) => setTimeout(r, 1200));
  t.false(existsSync(file("ready")), "and stays so though the check passes");
  probes.close();
  t.false(existsSync(file("alive")), "close removes both");
});

test("probe files: a ready file left by an earlier process is not taken for this one's", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "ambit-probes-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const leftover = new ProbeFiles(dir, () => true, silentLogger);
  t.true(existsSync(join(dir, "ready")));
  const probes = new ProbeFiles(dir, () => false, silentLogger);
  t.teardown(() => {
    leftover.close();
    probes.close();
  });
  t.false(existsSync(join(dir, "ready")));
});
