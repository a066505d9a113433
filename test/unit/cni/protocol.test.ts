import test from "ava";
import { MAX_LINE_BYTES, parseAgentAnswer, parseAgentRequest } from "../../../agent/cni/protocol.js";

const add = {
  command: "add",
  namespace: "shop",
  name: "web",
  containerId: "c1",
  netns: "/proc/1/ns/net",
  ips: ["10.0.0.5"],
};
const invalid = (o: unknown) => (parseAgentRequest(JSON.stringify(o)) as { invalid?: string }).invalid;

test("a well-formed request comes back as itself", (t) => {
  t.deepEqual(parseAgentRequest(JSON.stringify(add)), add);
  t.deepEqual(parseAgentRequest(JSON.stringify({ ...add, command: "del", netns: "", ips: [] })), {
    ...add,
    command: "del",
    netns: "",
    ips: [],
  });
  t.deepEqual(parseAgentRequest(JSON.stringify({ ...add, ips: ["fd00::5", "10.0.0.5"] })), {
    ...add,
    ips: ["fd00::5", "10.0.0.5"],
  });
});

test("what would reach nftables or the namespace registry is checked: addresses, paths, sizes", (t) => {
  t.is(invalid({ ...add, ips: ["10.0.0.5; flush ruleset"] }), "bad ips");
  t.is(invalid({ ...add, ips: ["10.0.0.5/24"] }), "bad ips");
  t.is(invalid({ ...add, ips: Array(9).fill("10.0.0.5") }), "bad ips");
  t.is(invalid({ ...add, netns: "relative/path" }), "netns must be an absolute path");
  t.is(invalid({ ...add, netns: "" }), "netns must be an absolute path");
  t.is(invalid({ ...add, name: "x".repeat(254) }), "bad name");
  t.is(invalid({ ...add, command: "gc" }), "unknown command");
  t.is(invalid({ ...add, namespace: "" }), "namespace, name and containerId are required");
  t.is(invalid([]), "unknown command");
  t.is((parseAgentRequest("{") as { invalid?: string }).invalid, "not JSON");
  t.true(MAX_LINE_BYTES <= 16 * 1024);
});

test("answers: the three results and errors; anything else is not an answer", (t) => {
  t.deepEqual(parseAgentAnswer('{"result":"enrolled"}'), { result: "enrolled" });
  t.deepEqual(parseAgentAnswer('{"result":"not_meshed","reason":"labels"}'), {
    result: "not_meshed",
    reason: "labels",
  });
  t.deepEqual(parseAgentAnswer('{"error":{"code":"pod_unknown","message":"m"}}'), {
    error: { code: "pod_unknown", message: "m" },
  });
  t.is(parseAgentAnswer('{"result":"ok"}'), undefined);
  t.is(parseAgentAnswer('{"error":{"code":1}}'), undefined);
  t.is(parseAgentAnswer("null"), undefined);
});
