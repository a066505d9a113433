import test from "ava";
import { LOG_LEVELS, workerLog } from "../../../agent/dataplane/worker-log.js";
import { AmbitError } from "../../../agent/errors.js";

function recording(level: string) {
  const lines: Array<{ record: Record<string, unknown>; level: number }> = [];
  const log = workerLog(level, (line, n) =>
    lines.push({ record: JSON.parse(line) as Record<string, unknown>, level: n }),
  );
  return { log, lines };
}

test("lines below the level are dropped; the rest carry the child's bindings, the fields and the message", (t) => {
  const { log, lines } = recording("info");
  const child = log.child({ pod: "shop/a" }).child({ listener: "hbone" });
  child.debug({ detail: 1 }, "dropped");
  child.warn({ destination: "shop/b", bytes: 12n }, "HBONE connection failed");
  t.is(lines.length, 1);
  t.is(lines[0]?.level, LOG_LEVELS.warn);
  t.deepEqual(lines[0]?.record, {
    level: 40,
    pod: "shop/a",
    listener: "hbone",
    destination: "shop/b",
    bytes: "12",
    msg: "HBONE connection failed",
  });
  const { log: silent, lines: none } = recording("silent");
  silent.fatal({}, "not even this");
  t.is(none.length, 0);
});

test("errors are written out with their type, code, stack and cause, as pino's serializer does", (t) => {
  const { log, lines } = recording("debug");
  const cause = Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED", errno: 111 });
  log.error({ err: new AmbitError("dial_failed", "cannot reach shop/b", { cause }) }, "dial failed");
  const err = lines[0]?.record.err as Record<string, unknown>;
  t.like(err, { type: "AmbitError", message: "cannot reach shop/b", code: "dial_failed" });
  t.true(String(err.stack).includes("cannot reach shop/b"));
  t.like(err.cause as Record<string, unknown>, {
    type: "Error",
    message: "connect ECONNREFUSED",
    code: "ECONNREFUSED",
    errno: 111,
  });
});

test("a field that cannot be written drops the fields, not the line", (t) => {
  const { log, lines } = recording("info");
  const loop: Record<string, unknown> = {};
  loop.self = loop;
  log.child({ pod: "shop/a" }).warn({ loop }, "still said");
  t.like(lines[0]?.record, { level: 40, pod: "shop/a", msg: "still said" });
  t.true(String(lines[0]?.record.logFieldsDropped).includes("circular"));
});
