import { networkInterfaces } from "node:os";
import test from "ava";
import { interfaceAddresses } from "../../../native-bindings/ifaddrs.js";

test("the namespace's addresses are what Node's own listing reports, with IPv6 scopes", (t) => {
  const ours = interfaceAddresses();
  const node = Object.entries(networkInterfaces()).flatMap(([name, list]) =>
    (list ?? []).map((a) => ({
      interface: name,
      family: a.family === "IPv4" ? 4 : 6,
      address: a.address,
      scopeId: a.scopeid,
    })),
  );
  const key = (a: { interface: string; family: number; address: string }) => `${a.interface} ${a.family} ${a.address}`;
  t.deepEqual(ours.map(key).sort(), node.map(key).sort());
  t.true(ours.some((a) => a.interface === "lo" && a.address === "127.0.0.1" && a.family === 4));
  for (const a of ours.filter((x) => x.address.startsWith("fe80:"))) {
    t.is(a.scopeId, node.find((n) => key(n) === key(a))?.scopeId, `${a.interface} ${a.address}`);
  }
});

test("at most `max` addresses are read", (t) => {
  const all = interfaceAddresses();
  t.true(all.length >= 1);
  t.deepEqual(interfaceAddresses(1), all.slice(0, 1));
  t.deepEqual(interfaceAddresses(0), []);
});

test("what libc allocates for a listing is freed: memory stays flat over many listings", (t) => {
  for (let i = 0; i < 2000; i++) interfaceAddresses();
  const before = process.memoryUsage().rss;
  for (let i = 0; i < 30_000; i++) interfaceAddresses();
  const grownMb = (process.memoryUsage().rss - before) / 1e6;
  // A list never freed, or a koffi view per address, grows RSS by 30-60 MB over as many listings.
  t.true(grownMb < 16, `RSS grew ${grownMb.toFixed(1)} MB over 30,000 listings`);
});
