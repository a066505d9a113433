import test from "ava";
import { prettyLine } from "../../../agent/log.js";

test("pretty lines: clock, level, message, then fields", (t) => {
  const line = prettyLine(
    JSON.stringify({
      level: "warn",
      time: "2026-11-28T06:40:01.123Z",
      pid: 1,
      name: "ambit",
      pod: "default/a",
      err: { code: "ECONNREFUSED" },
      msg: "HBONE connection failed",
    }),
  );
  t.is(line, '06:40:01.123 WARN  HBONE connection failed pod=default/a err={"code":"ECONNREFUSED"}');
});
