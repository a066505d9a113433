import test from "ava";
import { CniError, errorResult, parseCniArgs, parseInvocation, prevResultIps } from "../../../agent/cni/invocation.js";

const env = { CNI_COMMAND: "ADD", CNI_CONTAINERID: "c1", CNI_NETNS: "/proc/1/ns/net", CNI_IFNAME: "eth0" };
const conf = { cniVersion: "1.0.0", name: "k8s", prevResult: { ips: [{ address: "10.0.0.5/24" }] } };

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof CniError ? err.code : `not a CniError: ${err}`;
  }
  return undefined;
}

test("an ADD from the kubelet: pod from CNI_ARGS, sandbox from the environment", (t) => {
  const call = parseInvocation(
    { ...env, CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=c1" },
    JSON.stringify(conf),
  );
  t.like(call, {
    command: "ADD",
    containerId: "c1",
    netns: "/proc/1/ns/net",
    pod: { namespace: "shop", name: "web-1" },
  });
  if (call.command === "VERSION") return;
  t.is(call.config.agentSocket, "/var/run/ambit/cni.sock");
  t.is(call.config.timeoutMs, 10_000);
  t.deepEqual(prevResultIps(call.config.prevResult), ["10.0.0.5"]);
});

test("not a pod (no K8S_POD_*): no pod, passed through by the plugin", (t) => {
  t.is((parseInvocation(env, JSON.stringify(conf)) as { pod?: unknown }).pod, undefined);
});

test("each malformed input has its CNI code", (t) => {
  t.is(
    code(() => parseInvocation({ ...env, CNI_COMMAND: "GC" }, JSON.stringify(conf))),
    "invalid_environment",
  );
  t.is(
    code(() => parseInvocation({ ...env, CNI_NETNS: "" }, JSON.stringify(conf))),
    "invalid_environment",
  );
  t.is(
    code(() => parseInvocation({ ...env, CNI_CONTAINERID: undefined }, JSON.stringify(conf))),
    "invalid_environment",
  );
  t.is(
    code(() => parseInvocation(env, "{")),
    "decode_failure",
  );
  t.is(
    code(() => parseInvocation(env, "[]")),
    "decode_failure",
  );
  t.is(
    code(() => parseInvocation(env, JSON.stringify({ ...conf, cniVersion: "0.3.1" }))),
    "incompatible_version",
  );
  t.is(
    code(() => parseInvocation(env, JSON.stringify({ cniVersion: "1.0.0", name: "k" }))),
    "invalid_config",
  );
  t.is(
    code(() => parseInvocation(env, JSON.stringify({ ...conf, timeoutMs: 1e9 }))),
    "invalid_config",
  );
  const plainApi = { ...conf, kubernetes: { server: "http://x", tokenFile: "/t", caFile: "/c" } };
  t.is(
    code(() => parseInvocation(env, JSON.stringify(plainApi))),
    "invalid_config",
  );
  t.is(
    code(() => parseCniArgs("K8S_POD_NAME")),
    "invalid_environment",
  );
  t.is(
    code(() => parseCniArgs(`A=${"x".repeat(5000)}`)),
    "invalid_environment",
  );
});

test("DEL needs neither a namespace path nor prevResult", (t) => {
  const call = parseInvocation(
    { ...env, CNI_COMMAND: "DEL", CNI_NETNS: undefined },
    '{"cniVersion":"1.0.0","name":"k"}',
  );
  t.like(call, { command: "DEL", netns: "" });
});

test("VERSION, and the error result's shape", (t) => {
  t.deepEqual(parseInvocation({ CNI_COMMAND: "VERSION" }, '{"cniVersion":"0.4.0"}'), {
    command: "VERSION",
    cniVersion: "0.4.0",
  });
  const err = new CniError("try_again_later", "agent down", "detail");
  t.deepEqual(JSON.parse(errorResult("1.0.0", err)), {
    cniVersion: "1.0.0",
    code: 11,
    msg: "agent down",
    details: "detail",
  });
});
