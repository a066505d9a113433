/**
 * Return routing installed over rtnetlink inside a namespace of the test's own, observed with `ip` from outside:
 * exactly one rule and one local route per family, idempotent both ways, and nothing half-done when a family fails.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { constants } from "node:os";
import test, { type ExecutionContext } from "ava";
import { ReturnRoutingError } from "../../agent/redirect/errors.js";
import {
  installReturnRouting,
  type ReturnRoutingFamily,
  removeReturnRouting,
} from "../../agent/redirect/return-routing-apply.js";
import { trackNetns, untrackNetns } from "../../agent/sim/cleanup.js";
import { SyscallError } from "../../native-bindings/errors.js";
import { closeFdQuietly, openRouteSocket, receiveNetlink } from "../../native-bindings/netlink.js";
import { inNetns } from "../../native-bindings/netns.js";

const RULE = "32764:\tfrom all fwmark 0x111/0xfff lookup 100";
const ROUTE = { 4: "local default dev lo scope host", 6: "local default dev lo metric 1024 pref medium" };
const both: ReturnRoutingFamily[] = [
  { family: 4, required: true },
  { family: 6, required: true },
];

let made = 0;

/** A namespace of this test's own with lo up (as in any pod), deleted when the test ends, pass or fail. */
function scratchNetns(t: ExecutionContext, ...sysctls: string[]): string {
  const name = `ambit-rr-${process.pid}-${made++}`;
  execFileSync("ip", ["netns", "add", name]);
  trackNetns(name);
  t.teardown(() => {
    if (existsSync(`/var/run/netns/${name}`)) execFileSync("ip", ["netns", "del", name]);
    untrackNetns(name);
  });
  execFileSync("ip", ["-n", name, "link", "set", "lo", "up"]);
  if (sysctls.length > 0) execFileSync("ip", ["netns", "exec", name, "sysctl", "-q", "-w", ...sysctls]);
  return name;
}

function lines(ns: string, family: 4 | 6, ...args: string[]): string[] {
  const out = execFileSync("ip", ["-n", ns, `-${family}`, ...args], { encoding: "utf8", stdio: "pipe" });
  return out
    .split("\n")
    .map((l) => l.trimEnd())
    .filter((l) => l !== "");
}

/** The routes of table 100; IPv4 has no table until a route is first put in it. */
function table100(ns: string, family: 4 | 6): string[] {
  try {
    return lines(ns, family, "route", "show", "table", "100");
  } catch (err) {
    if (/FIB table does not exist/.test(String((err as { stderr?: unknown }).stderr))) return [];
    throw err;
  }
}

/** Rules beyond the kernel's defaults, and the routes of table 100. */
function state(ns: string, family: 4 | 6) {
  const rules = lines(ns, family, "rule", "show").filter((l) => !/^(0|32766|32767):\tfrom all lookup \w+$/.test(l));
  return { rules, routes: table100(ns, family) };
}

const installed = (family: 4 | 6) => ({ rules: [RULE], routes: [ROUTE[family]] });
const empty = { rules: [], routes: [] };
const within = <T>(ns: string, fn: () => T): T => inNetns(`/var/run/netns/${ns}`, fn);

test("install adds exactly the rule and the local route on lo for each family; again, nothing more", (t) => {
  const ns = scratchNetns(t);
  t.deepEqual(state(ns, 4), empty);
  t.deepEqual(
    within(ns, () => installReturnRouting(both)),
    { installed: [4, 6], skipped: [] },
  );
  t.deepEqual(state(ns, 4), installed(4));
  t.deepEqual(state(ns, 6), installed(6));
  t.deepEqual(
    within(ns, () => installReturnRouting(both)),
    { installed: [4, 6], skipped: [] },
  );
  t.deepEqual(state(ns, 4), installed(4), "no duplicate rule");
  t.deepEqual(state(ns, 6), installed(6));
});

test("remove takes both away, and finds nothing to do the second time; iproute2's own are removed too", (t) => {
  const ns = scratchNetns(t);
  within(ns, () => installReturnRouting(both));
  within(ns, () => removeReturnRouting([4, 6]));
  t.deepEqual(state(ns, 4), empty);
  t.deepEqual(state(ns, 6), empty);
  t.notThrows(() => within(ns, () => removeReturnRouting([4, 6])));
  for (const family of [4, 6] as const) {
    execFileSync("ip", [
      "-n",
      ns,
      `-${family}`,
      "rule",
      "add",
      "fwmark",
      "0x111/0xfff",
      "pref",
      "32764",
      "lookup",
      "100",
    ]);
    execFileSync("ip", ["-n", ns, `-${family}`, "route", "add", "local", "default", "dev", "lo", "table", "100"]);
    t.deepEqual(state(ns, family), installed(family), "what `ip` makes reads the same as ours");
  }
  within(ns, () => removeReturnRouting([4, 6]));
  t.deepEqual(state(ns, 4), empty);
  t.deepEqual(state(ns, 6), empty);
});

test("IPv6 disabled: an unrequired IPv6 is skipped with the kernel's reason (EACCES), IPv4 installed", (t) => {
  const ns = scratchNetns(t, "net.ipv6.conf.all.disable_ipv6=1");
  const result = within(ns, () =>
    installReturnRouting([
      { family: 4, required: true },
      { family: 6, required: false },
    ]),
  );
  t.deepEqual(result.installed, [4]);
  t.is(result.skipped.length, 1);
  t.is(result.skipped[0]?.family, 6);
  t.regex(result.skipped[0]?.reason ?? "", /add IPv6 route .*: rtnetlink failed: EACCES \(IPv6 is disabled/);
  t.deepEqual(state(ns, 4), installed(4));
  t.deepEqual(state(ns, 6), empty, "nothing of IPv6 is left, not even its rule");
  t.notThrows(() => within(ns, () => removeReturnRouting([4, 6])));
  t.deepEqual(state(ns, 4), empty);
});

test("IPv6 disabled: a required IPv6 is a typed error, and this call's IPv4 is taken back, not an earlier one's", (t) => {
  const ns = scratchNetns(t, "net.ipv6.conf.all.disable_ipv6=1");
  const err = t.throws(() => within(ns, () => installReturnRouting(both)), { instanceOf: ReturnRoutingError });
  t.is(err?.code, "return_routing_failed");
  t.is(err?.request, "add IPv6 route local default dev lo table 100");
  t.is(err?.refusedWith, constants.errno.EACCES);
  t.is((err?.cause as SyscallError | undefined)?.code, "EACCES");
  t.deepEqual(err?.leftBehind, []);
  t.deepEqual(state(ns, 4), empty, "the IPv4 rule and route this call added are gone");
  t.deepEqual(state(ns, 6), empty);

  within(ns, () => installReturnRouting([{ family: 4, required: true }]));
  t.throws(() => within(ns, () => installReturnRouting(both)), { instanceOf: ReturnRoutingError });
  t.deepEqual(state(ns, 4), installed(4), "what was there before the failed call stays");
});

test("a route socket with no answer queued is a typed error at once, not a wait", (t) => {
  const fd = openRouteSocket();
  t.teardown(() => closeFdQuietly(fd));
  const err = t.throws(() => receiveNetlink(fd, 64), { instanceOf: SyscallError });
  t.is(err?.errno, constants.errno.EAGAIN);
  t.regex(err?.message ?? "", /no netlink answer queued/);
});
