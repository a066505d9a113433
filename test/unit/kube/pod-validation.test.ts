import test from "ava";
import { PodFileFormatError, parsePodFile, validateClusterState } from "../../../agent/kube/pod-validation.js";

const pod = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  namespace: "shop",
  serviceAccount: "web",
  nodeName: "node-a",
  labels: { app: name },
  netns: `/var/run/netns/${name}`,
  ips: ["10.0.0.2", "fd00::2"],
  ...extra,
});

test("a valid file is kept whole, with defaults filled in", (t) => {
  const { state, problems } = validateClusterState({
    namespaces: [{ name: "shop", labels: { "ambit.dev/mesh": "enabled" }, peerAuthentication: "STRICT" }],
    pods: [pod("a"), { ...pod("b"), serviceAccount: undefined, labels: undefined }],
  });
  t.deepEqual(problems, []);
  t.is(state.pods.length, 2);
  t.is(state.pods[1]?.serviceAccount, "default");
  t.deepEqual(state.pods[1]?.labels, {});
  t.is(state.namespaces[0]?.peerAuthentication, "STRICT");
});

test("namespaces may be omitted", (t) => {
  const { state, problems } = validateClusterState({ pods: [pod("a")] });
  t.deepEqual(problems, []);
  t.deepEqual(state.namespaces, []);
});

test("a pod without IPs is rejected, the others are kept", (t) => {
  const { state, problems } = validateClusterState({ pods: [pod("a"), pod("b", { ips: [] }), pod("c")] });
  t.deepEqual(
    state.pods.map((p) => p.name),
    ["a", "c"],
  );
  t.is(problems.length, 1);
  t.like(problems[0], { kind: "pod", key: "shop/b", index: 1 });
  t.regex(problems[0]?.message ?? "", /pod shop\/b: has no IPs/);
});

test("bad IPs, missing fields and unknown modes each reject their pod with a clear message", (t) => {
  const { state, problems } = validateClusterState({
    pods: [
      pod("bad-ip", { ips: ["10.0.0.300", "fd00::2"] }),
      pod("no-netns", { netns: undefined }),
      pod("relative-netns", { netns: "netns/x" }),
      { ...pod("x"), name: undefined },
      pod("no-ns", { namespace: "" }),
      pod("mode", { peerAuthentication: "STRICTEST" }),
      pod("labels", { labels: { a: 1 } }),
      pod("ok"),
      "not an object",
    ],
  });
  t.deepEqual(
    state.pods.map((p) => p.name),
    ["ok"],
  );
  const byKey = Object.fromEntries(problems.map((p) => [p.key, p.message]));
  t.regex(byKey["shop/bad-ip"] ?? "", /invalid IPs "10\.0\.0\.300"/);
  t.regex(byKey["shop/no-netns"] ?? "", /has no netns/);
  t.regex(byKey["shop/relative-netns"] ?? "", /not an absolute path/);
  t.regex(byKey["pods[3]"] ?? "", /has no name/);
  t.regex(byKey["pods[4]"] ?? "", /has no namespace/);
  t.regex(byKey["shop/mode"] ?? "", /unknown peerAuthentication mode "STRICTEST"/);
  t.regex(byKey["shop/labels"] ?? "", /labels "a" must have string values/);
  t.regex(byKey["pods[8]"] ?? "", /must be an object/);
  t.is(problems.length, 8);
});

test("a duplicate pod keeps the first entry", (t) => {
  const { state, problems } = validateClusterState({ pods: [pod("a"), pod("a", { ips: ["10.0.0.9"] })] });
  t.deepEqual(state.pods[0]?.ips, ["10.0.0.2", "fd00::2"]);
  t.is(state.pods.length, 1);
  t.regex(problems[0]?.message ?? "", /listed twice/);
});

test("an invalid namespace rejects itself and its pods, not other namespaces' pods", (t) => {
  const { state, problems } = validateClusterState({
    namespaces: [
      { name: "shop", labels: {}, peerAuthentication: "MAYBE" },
      { name: "other", labels: {} },
    ],
    pods: [pod("a"), pod("b", { namespace: "other" })],
  });
  t.deepEqual(
    state.namespaces.map((n) => n.name),
    ["other"],
  );
  t.deepEqual(
    state.pods.map((p) => p.name),
    ["b"],
  );
  t.deepEqual(
    problems.map((p) => p.key),
    ["shop", "shop/a"],
  );
  t.regex(problems[0]?.message ?? "", /unknown peerAuthentication mode "MAYBE"/);
});

test("a file that is not JSON or not the right shape is a typed error", (t) => {
  for (const text of ["{ nope", "[]", "null", '"x"', '{"pods": {}}', '{"pods": [], "namespaces": 3}', "{}"]) {
    const err = t.throws(() => parsePodFile(text), { instanceOf: PodFileFormatError }, text);
    t.is(err?.code, "POD_FILE_INVALID");
  }
  const err = t.throws(() => parsePodFile("{ nope"));
  t.truthy(err?.cause);
});
