import test from "ava";
import { ConfigError, parseAgentConfig } from "../../../agent/node/config.js";

const base = ["--node", "n1", "--manifests", "/tmp/cluster.json", "--ca-dir", "/tmp/ca"];

test("--workers sets the data plane's thread count", (t) => {
  t.is(parseAgentConfig([...base, "--workers", "3"]).workers, 3);
  t.is(parseAgentConfig(base).workers, undefined, "absent: the agent counts the CPUs it may use");
});

test("a worker count outside what ambit knows is refused at start", (t) => {
  for (const n of ["0", "1.5", "-2", "many", "257"]) {
    t.throws(() => parseAgentConfig([...base, `--workers=${n}`]), { instanceOf: ConfigError, message: /--workers/ }, n);
  }
});
