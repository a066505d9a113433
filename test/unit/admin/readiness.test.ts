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
  t.deepEqual(readiness({ sourceStarted: true, pods: [pod()], failedPods: [], sourceProblems: [] }), {
    ready: true,
    reasons: [],
  });
  t.deepEqual(readiness({ sourceStarted: true, pods: [], failedPods: [], sourceProblems: [] }), {
    ready: true,
    reasons: [],
  });
  t.deepEqual(readiness({ sourceStarted: false, pods: [], failedPods: [], sourceProblems: [] }).reasons, [
    "cluster source not started",
  ]);
  t.deepEqual(
    readiness({ sourceStarted: true, pods: [pod({ certificate: false })], failedPods: [], sourceProblems: [] }),
    {
      ready: false,
      reasons: ["pod ns/a: no valid certificate for spiffe://td/ns/ns/sa/a"],
    },
  );
  t.deepEqual(
    readiness({ sourceStarted: true, pods: [pod({ redirected: false })], failedPods: [], sourceProblems: [] }).reasons,
    ["pod ns/a: redirection not in place"],
  );
  // A failed enrollment is reported once, as such, not also as "redirection not in place".
  const failed = [{ pod: "ns/a", reason: "netns_not_found" }];
  t.deepEqual(
    readiness({ sourceStarted: true, pods: [pod({ redirected: false })], failedPods: failed, sourceProblems: [] })
      .reasons,
    ["pod ns/a: not enrolled: netns_not_found (retrying)"],
  );
  // An unreachable API server: the last known state is served, and readiness says so.
  t.deepEqual(
    readiness({
      sourceStarted: true,
      pods: [pod()],
      failedPods: [],
      sourceProblems: ["pods: watch down: ECONNREFUSED"],
    }),
    { ready: false, reasons: ["cluster source: pods: watch down: ECONNREFUSED (serving the last known state)"] },
  );
});
