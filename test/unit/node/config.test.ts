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

test("--max-connections-per-pod and --max-connections set the connection limits; absent, the agent's defaults", (t) => {
  const set = parseAgentConfig([...base, "--max-connections-per-pod", "500", "--max-connections=20000"]);
  t.is(set.maxConnectionsPerPod, 500);
  t.is(set.maxConnections, 20_000);
  const unset = parseAgentConfig(base);
  t.is(unset.maxConnectionsPerPod, undefined, "absent: 20,000");
  t.is(unset.maxConnections, undefined, "absent: from RLIMIT_NOFILE");
  for (const n of ["0", "1.5", "-2", "many", "2147483648", "1e4", ""]) {
    t.throws(
      () => parseAgentConfig([...base, `--max-connections-per-pod=${n}`]),
      { instanceOf: ConfigError, message: /--max-connections-per-pod/ },
      n,
    );
    t.throws(
      () => parseAgentConfig([...base, `--max-connections=${n}`]),
      { instanceOf: ConfigError, message: /--max-connections / },
      n,
    );
  }
});
