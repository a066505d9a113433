import test from "ava";
import { stateFromObjects } from "../../../agent/kube/objects-state.js";
import { kubeProxyRules, simObjects } from "../../../agent/sim/manifests.js";
import { planSimCluster } from "../../../agent/sim/topology.js";

const plan = planSimCluster(
  {
    ipv6: true,
    octet: 42,
    nodes: [
      {
        name: "n1",
        pods: [
          { name: "web", labels: { app: "web" } },
          { name: "hidden", discover: true },
        ],
      },
      { name: "n2", pods: [{ name: "web2", labels: { app: "web" }, peerAuthentication: "STRICT" }] },
    ],
    services: [{ name: "web", selector: { app: "web" }, ports: [{ port: 80, targetPort: 8080 }] }],
  },
  "amtest",
);

test("the sim's objects are what the API server would serve, and convert cleanly", (t) => {
  const objects = simObjects(plan, [{ name: "default", labels: { "ambit.dev/mesh": "enabled" } }]);
  const state = stateFromObjects(objects);
  t.is(state.pods.size, 3);
  t.is(state.pods.get("default/web")?.netns, "/var/run/netns/amtest-n1-p1");
  t.is(state.pods.get("default/hidden")?.netns, undefined, "a pod to discover has no path");
  t.deepEqual(state.services.get("default/web")?.clusterIPs, ["10.42.255.1", "fd00:2a:ffff::1"]);
  const slices = [...state.endpointSlices.values()];
  t.deepEqual(slices.map((s) => s.addressType).sort(), ["IPv4", "IPv6"]);
  t.deepEqual(
    slices.find((s) => s.addressType === "IPv4")?.endpoints.map((e) => e.addresses[0]),
    ["10.42.1.2", "10.42.2.2"],
  );
  t.like([...state.peerAuthentications.values()][0], { mtls: "STRICT", selector: { "sim.ambit.dev/pod": "web2" } });
  t.is(state.namespaces.get("default")?.labels["ambit.dev/mesh"], "enabled");
});

test("kube-proxy's rules DNAT the ClusterIP to the endpoints in turn, both families", (t) => {
  const rules = kubeProxyRules(plan);
  t.regex(
    rules,
    /ip daddr 10\.42\.255\.1 tcp dport 80 dnat ip to numgen inc mod 2 map \{ 0 : 10\.42\.1\.2 \. 8080, 1 : 10\.42\.2\.2 \. 8080 \}/,
  );
  t.regex(rules, /ip6 daddr fd00:2a:ffff::1 tcp dport 80 dnat ip6 to numgen inc mod 2/);
  t.regex(rules, /oifname "br0" ct status dnat masquerade/);
});
