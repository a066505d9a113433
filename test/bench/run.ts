/**
 * `make bench [BENCH="enroll proxy"]`: runs the named benches (all by default) one after another and prints each
 * report. Exits nonzero only when a bench could not run (a harness error), never because a target was missed.
 */
import { runCniBench } from "./cni-bench.js";
import { runEnrollBench } from "./enroll-bench.js";
import { runIdentityBench } from "./identity-bench.js";
import { runKubeBench } from "./kube-bench.js";
import { runKubeConfigBench } from "./kube-config-bench.js";
import { runNetnsBench } from "./netns-bench.js";
import { runPolicyBench } from "./policy-bench.js";
import { runProxyBench } from "./proxy-bench.js";
import { runUpgradeBench } from "./upgrade-bench.js";

const BENCHES: Record<string, () => Promise<string>> = {
  cni: runCniBench,
  enroll: runEnrollBench,
  identity: runIdentityBench,
  kube: runKubeBench,
  "kube-config": runKubeConfigBench,
  netns: runNetnsBench,
  policy: runPolicyBench,
  proxy: runProxyBench,
  upgrade: runUpgradeBench,
};

const names = process.argv.slice(2).flatMap((a) => a.split(/[\s,]+/).filter(Boolean));
const unknown = names.filter((n) => !(n in BENCHES));
if (unknown.length) {
  process.stderr.write(`unknown bench: ${unknown.join(", ")} (known: ${Object.keys(BENCHES).join(", ")})\n`);
  process.exit(2);
}

let failed = 0;
for (const name of names.length ? names : Object.keys(BENCHES)) {
  const started = Date.now();
  console.log(`\n=== bench: ${name} ===`);
  try {
    const text = await (BENCHES[name] as () => Promise<string>)();
    console.log(text);
    console.log(`=== ${name}: done in ${((Date.now() - started) / 1000).toFixed(1)} s ===`);
  } catch (err) {
    failed++;
    console.error(`=== ${name}: FAILED to run ===`);
    console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    if (err instanceof Error && err.cause) console.error("cause:", err.cause);
  }
}
process.exit(failed ? 1 : 0);
