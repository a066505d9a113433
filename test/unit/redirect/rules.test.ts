import test from "ava";
import { buildHostRules } from "../../../agent/redirect/host-rules.js";
import {
  HBONE_PORT,
  INBOUND_PLAINTEXT_PORT,
  OUTBOUND_PORT,
  PROXY_MARK,
  RETURN_MARK,
} from "../../../agent/redirect/ports.js";
import { buildRedirectRules, buildRemoveRules, RedirectPlanError, TABLE } from "../../../agent/redirect/rules.js";

type Cmd = Record<string, Record<string, Record<string, unknown>>>;
const rulesOf = (doc: { nftables: unknown[] }, chain: string) =>
  (doc.nftables as Cmd[])
    .filter((c) => c.add?.rule && c.add.rule.chain === chain)
    .map((c) => JSON.stringify(c.add?.rule?.expr));

test("replaces the table atomically: add, delete, add come first in the one batch", (t) => {
  const doc = buildRedirectRules();
  const heads = (doc.nftables as Cmd[]).slice(0, 3).map((c) => Object.keys(c)[0]);
  t.deepEqual(heads, ["add", "delete", "add"]);
  t.is((doc.nftables[1] as Cmd).delete?.table?.name, TABLE);
});

test("outbound: marked and loopback traffic return before the redirect to the outbound port", (t) => {
  const out = rulesOf(buildRedirectRules(), "output");
  t.true(out[0]?.includes(`"right":${PROXY_MARK}`));
  t.true(out[1]?.includes('"oifname"') && out[1]?.includes('"lo"'));
  t.true(out.at(-1)?.includes(`"redirect":{"port":${OUTBOUND_PORT}}`));
  t.is(out.filter((r) => r.includes("redirect")).length, 1);
});

test("DNS over TCP is not redirected", (t) => {
  const out = rulesOf(buildRedirectRules(), "output");
  const dns = out.findIndex((r) => r.includes('"right":53'));
  t.true(dns >= 0 && dns < out.length - 1);
  t.true(out[dns]?.includes('"return"'));
});

test("inbound: HBONE port returns, every other TCP connection goes to the plaintext port, whatever its address", (t) => {
  const inbound = rulesOf(buildRedirectRules(), "prerouting");
  t.true(inbound[0]?.includes('"iifname"') && inbound[0]?.includes('"lo"'), "loopback is never captured");
  const hbone = inbound.findIndex((r) => r.includes(`"right":${HBONE_PORT}`) && r.includes('"return"'));
  const redirects = inbound.filter((r) => r.includes(`"redirect":{"port":${INBOUND_PLAINTEXT_PORT}}`));
  t.is(redirects.length, 1, "one rule for both families");
  t.true(hbone >= 0 && hbone < inbound.indexOf(redirects[0] as string));
  // No address match: a link-local, secondary or unlisted-family address is captured like a listed one.
  t.false(inbound.some((r) => r.includes('"daddr"')));
});

test("kubelet probe source is let through before any inbound redirect", (t) => {
  const inbound = rulesOf(buildRedirectRules(), "prerouting");
  const probe = inbound.findIndex((r) => r.includes("169.254.7.127"));
  const redirect = inbound.findIndex((r) => r.includes("redirect"));
  t.true(probe >= 0 && probe < redirect);
});

test("excluded ports are deduplicated, sorted, and returned before the redirect", (t) => {
  const doc = buildRedirectRules({
    excludeOutboundPorts: [8080, 22, 8080],
    excludeInboundPorts: [9090],
  });
  const out = rulesOf(doc, "output");
  t.true(out.some((r) => r.includes('{"set":[22,8080]}')));
  t.true(rulesOf(doc, "prerouting").some((r) => r.includes('"right":9090') && r.includes("return")));
});

test("the app's replies to the agent's connections are marked for the local route, and never leave the pod", (t) => {
  const doc = buildRedirectRules();
  const chains = (doc.nftables as Cmd[]).filter((c) => c.add?.chain).map((c) => c.add?.chain);
  const chain = (name: string) => chains.find((c) => c?.name === name);
  t.like(chain("mark"), { type: "filter", hook: "prerouting", prio: -150 });
  // A route chain: a changed mark makes the kernel route the packet again (to the local route).
  t.like(chain("return"), { type: "route", hook: "output", prio: -150 });
  t.like(chain("guard"), { type: "filter", hook: "postrouting" });
  const [outside, linkLocal, mark] = rulesOf(doc, "mark");
  t.true(outside?.includes('"op":"!=","left":{"meta":{"key":"iifname"}},"right":"lo"') && outside.includes('"return"'));
  t.true(linkLocal?.includes('"addr":"fe80::"') && linkLocal.includes('"return"'), "link-local is left alone");
  t.true(mark?.includes(`"right":${PROXY_MARK}`) && mark.includes(`${RETURN_MARK}]`));
  const [restore] = rulesOf(doc, "return");
  t.true(restore?.includes(`"right":${RETURN_MARK}`), "only connections the agent made to the pod");
  t.true(restore?.includes('"op":"!="') && restore.includes(`"right":${PROXY_MARK}`), "not the agent's own packets");
  t.true(restore?.includes('"mangle":{"key":{"meta":{"key":"mark"}},"value":{"ct":{"key":"mark"}}}'));
  const [guard] = rulesOf(doc, "guard");
  t.true(guard?.includes(`"right":${RETURN_MARK}`) && guard.includes('"oifname"') && guard.includes('"drop"'));
});

test("bad plans are refused with a typed error", (t) => {
  t.throws(() => buildRedirectRules({ excludeInboundPorts: [70000] }), { instanceOf: RedirectPlanError });
  t.throws(() => buildRedirectRules({ excludeOutboundPorts: [0] }), { instanceOf: RedirectPlanError });
});

test("removal is idempotent: add then delete", (t) => {
  t.deepEqual(
    (buildRemoveRules().nftables as Cmd[]).map((c) => Object.keys(c)[0]),
    ["add", "delete"],
  );
});

test("host rules SNAT node-originated TCP to enrolled pods, per family", (t) => {
  const doc = buildHostRules(["10.0.0.3", "10.0.0.2", "fd00::2"]);
  const rules = rulesOf(doc, "postrouting");
  t.is(rules.length, 2);
  t.true(rules[0]?.includes('{"set":["10.0.0.2","10.0.0.3"]}') && rules[0]?.includes('"local"'));
  t.true(rules[1]?.includes("fd00::2") && rules[1]?.includes('"snat"'));
  t.is(buildHostRules([]).nftables.length, 2, "no pods: the table is only removed");
});
