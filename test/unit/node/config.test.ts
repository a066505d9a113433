import test from "ava";
import { ConfigError, parseAgentConfig } from "../../../agent/node/config.js";

const base = ["--node", "n1", "--manifests", "/tmp/cluster.json", "--ca-dir", "/tmp/ca"];

test("the data path is chosen by --dataplane, and --workers sets its thread count", (t) => {
  const chosen = parseAgentConfig([...base, "--dataplane", "workers", "--workers", "3"]);
  t.is(chosen.dataplane, "workers");
  t.is(chosen.workers, 3);
  const unset = parseAgentConfig([...base, "--dataplane", "workers"]);
  t.is(unset.workers, undefined, "absent: the agent counts the CPUs it may use");
});

test("a data path or worker count outside what ambit knows is refused at start", (t) => {
  t.throws(() => parseAgentConfig([...base, "--dataplane", "ebpf"]), {
    instanceOf: ConfigError,
    message: /--dataplane/,
  });
  for (const n of ["0", "1.5", "-2", "many", "257"]) {
    t.throws(() => parseAgentConfig([...base, `--workers=${n}`]), { instanceOf: ConfigError, message: /--workers/ }, n);
  }
});
