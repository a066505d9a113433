import test from "ava";
import { installPlugin, removePlugin } from "../../../agent/cni/conflist.js";

const calico = JSON.stringify({
  name: "k8s-pod-network",
  cniVersion: "1.0.0",
  plugins: [
    { type: "calico", ipam: { type: "calico-ipam" } },
    { type: "portmap", capabilities: { portMappings: true } },
  ],
});
const entry = { agentSocket: "/var/run/ambit/cni.sock", kubernetes: { server: "https://10.96.0.1:443" } };

test("install appends ambit-cni last, once, whatever the number of runs; settings follow the newest install", (t) => {
  const once = installPlugin(calico, entry);
  const twice = installPlugin(once, entry);
  t.is(twice, once);
  const list = JSON.parse(twice);
  t.deepEqual(
    list.plugins.map((p: { type: string }) => p.type),
    ["calico", "portmap", "ambit-cni"],
  );
  t.is(list.name, "k8s-pod-network");
  const moved = JSON.parse(installPlugin(once, { ...entry, timeoutMs: 5000 }));
  t.is(moved.plugins.length, 3);
  t.is(moved.plugins[2].timeoutMs, 5000);
});

test("an entry put elsewhere by hand is moved last, not duplicated", (t) => {
  const odd = JSON.parse(calico);
  odd.plugins.unshift({ type: "ambit-cni", agentSocket: "/old" });
  const fixed = JSON.parse(installPlugin(JSON.stringify(odd), entry));
  t.deepEqual(
    fixed.plugins.map((p: { type: string }) => p.type),
    ["calico", "portmap", "ambit-cni"],
  );
  t.is(fixed.plugins[2].agentSocket, "/var/run/ambit/cni.sock");
});

test("a single-plugin .conf becomes a list with the plugin first", (t) => {
  const conf = JSON.stringify({ cniVersion: "0.4.0", name: "bridge-net", type: "bridge", bridge: "cni0" });
  const list = JSON.parse(installPlugin(conf, entry));
  t.deepEqual(list.plugins[0], { type: "bridge", bridge: "cni0" });
  t.is(list.cniVersion, "0.4.0");
  t.is(list.plugins[1].type, "ambit-cni");
});

test("remove takes the entry out and leaves a configuration without one byte for byte", (t) => {
  const removed = JSON.parse(removePlugin(installPlugin(calico, entry)));
  t.deepEqual(removed, JSON.parse(calico));
  t.is(removePlugin(calico), calico);
});

test("what is not a CNI configuration is refused with a code, never rewritten", (t) => {
  t.throws(() => installPlugin("{", entry), { code: "conflist_invalid" } as object);
  t.throws(() => installPlugin("[]", entry), { code: "conflist_invalid" } as object);
  t.throws(() => installPlugin('{"name":"x"}', entry), { code: "conflist_invalid" } as object);
  t.throws(() => installPlugin('{"name":"x","plugins":[1]}', entry), { code: "conflist_invalid" } as object);
});
