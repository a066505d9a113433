import test from "ava";
import type { CniAgentRequest } from "../../../agent/cni/protocol.js";
import { cniRequestLabels } from "../../../agent/cni/request-labels.js";

const request = (command: CniAgentRequest["command"]): CniAgentRequest => ({
  command,
  namespace: "shop",
  name: "web",
  containerId: "s1",
  netns: "/var/run/netns/cni-1",
  ips: ["10.0.0.9"],
});
const error = (code: string) => ({ error: { code, message: "m" } });

test("answers with a result are counted under it, by command", (t) => {
  t.deepEqual(cniRequestLabels(request("add"), { result: "enrolled" }), { command: "add", result: "enrolled" });
  t.deepEqual(cniRequestLabels(request("add"), { result: "not_meshed", reason: "labels" }), {
    command: "add",
    result: "not_meshed",
  });
  t.deepEqual(cniRequestLabels(request("check"), { result: "enrolled" }), { command: "check", result: "enrolled" });
  t.deepEqual(cniRequestLabels(request("del"), { result: "removed" }), { command: "del", result: "removed" });
});

test("a line that is not a request has no command of its own: invalid, bad_request", (t) => {
  t.deepEqual(cniRequestLabels({ invalid: "not JSON" }, error("bad_request")), {
    command: "invalid",
    result: "bad_request",
  });
});

test("errors map onto the closed set; enrollment reasons are all `failed`", (t) => {
  t.deepEqual(cniRequestLabels(request("add"), error("pod_unknown")), { command: "add", result: "pod_unknown" });
  t.deepEqual(cniRequestLabels(request("add"), error("no_ips")), { command: "add", result: "bad_request" });
  for (const code of ["netns_not_found", "netns_ambiguous", "rules_failed", "listener_failed", "no_certificate", "x"]) {
    t.deepEqual(cniRequestLabels(request("add"), error(code)), { command: "add", result: "failed" }, code);
  }
});

test("not_enrolled is CHECK's answer, and an ADD's failure", (t) => {
  t.deepEqual(cniRequestLabels(request("check"), error("not_enrolled")), { command: "check", result: "not_enrolled" });
  t.deepEqual(cniRequestLabels(request("add"), error("not_enrolled")), { command: "add", result: "failed" });
});
