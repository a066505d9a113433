import test from "ava";
import { readiness } from "../../../agent/admin/readiness.js";

const pod = (over = {}) => ({
  pod: "ns/a",
  redirected: true,
  certificate: true,
  identity: "spiffe://td/ns/ns/sa/a",
  ...over,
});

test("ready only with a started source and every pod redirected and certified", (t) => {
  t.deepEqual(readiness({ sourceStarted: true, pods: [pod()], failedPods: [] }), { ready: true, reasons: [] });
  t.deepEqual(readiness({ sourceStarted: true, pods: [], failedPods: [] }), { ready: true, reasons: [] });
  t.deepEqual(readiness({ sourceStarted: false, pods: [], failedPods: [] }).reasons, ["pod source not started"]);
  t.deepEqual(readiness({ sourceStarted: true, pods: [pod({ certificate: false })], failedPods: [] }), {
    ready: false,
    reasons: ["pod ns/a: no valid certificate for spiffe://td/ns/ns/sa/a"],
  });
  t.deepEqual(readiness({ sourceStarted: true, pods: [pod({ redirected: false })], failedPods: [] }).reasons, [
    "pod ns/a: redirection not in place",
  ]);
  // A failed enrollment is reported once, as such, not also as "redirection not in place".
  t.deepEqual(readiness({ sourceStarted: true, pods: [pod({ redirected: false })], failedPods: ["ns/a"] }).reasons, [
    "pod ns/a: enrollment failed (retrying)",
  ]);
});
