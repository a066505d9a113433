import { isIP } from "node:net";
import { fc, testProp } from "@fast-check/ava";
import { formatAuthority, formatBaggage, parseAuthority, parseBaggage } from "../../../agent/proxy/authority.js";
import "./settings.js";

/**
 * `:authority` and `baggage` are what a peer writes in its CONNECT: parsing never throws, accepts only what an
 * address and port can be, and gives back what the formatting side wrote.
 */

const portArb = fc.integer({ min: 1, max: 65535 });
const ipArb = fc.oneof(fc.ipV4(), fc.ipV6());

testProp("parseAuthority(formatAuthority(ip, port)) is {ip, port}", [ipArb, portArb], (t, ip, port) => {
  t.deepEqual(parseAuthority(formatAuthority(ip, port)), { ip, port });
});

/** Strings near the accepted shapes, and anything at all. */
const authorityArb = fc.oneof(
  fc.string({ unit: "binary", maxLength: 60 }),
  fc
    .tuple(
      fc.oneof(ipArb, fc.string({ maxLength: 20 })),
      fc.string({ unit: fc.constantFrom(..."0123456789"), maxLength: 7 }),
    )
    .chain(([host, port]) =>
      fc.constantFrom(
        `${host}:${port}`,
        `[${host}]:${port}`,
        `${host}%eth0:${port}`,
        `[${host}%25eth0]:${port}`,
        `[${host}%eth0]:${port}`,
      ),
    ),
);

testProp(
  "any authority: undefined, or an IP literal without a zone and a port 1-65535 that formats back to itself",
  [authorityArb],
  (t, authority) => {
    const parsed = parseAuthority(authority);
    if (parsed === undefined) {
      t.pass();
      return;
    }
    t.true(Number.isInteger(parsed.port) && parsed.port >= 1 && parsed.port <= 65535);
    t.not(isIP(parsed.ip), 0);
    // A zone names an interface of the receiving node: no pod address has one (convert-common.ts refuses them).
    t.false(parsed.ip.includes("%"), authority);
    // Brackets are for IPv6 only (RFC 3986 IP-literal), and an IPv6 address always has them.
    t.is(authority.startsWith("["), isIP(parsed.ip) === 6, authority);
    t.deepEqual(parseAuthority(formatAuthority(parsed.ip, parsed.port)), parsed);
  },
);

const fieldArb = fc.string({ unit: "grapheme", maxLength: 30 });

testProp(
  "parseBaggage(formatBaggage(fields)) gives the fields back, whatever they hold",
  [fc.record({ namespace: fieldArb, workload: fieldArb, pod: fieldArb })],
  (t, fields) => {
    t.deepEqual(parseBaggage(formatBaggage(fields)), {
      "k8s.namespace.name": fields.namespace,
      "k8s.workload.name": fields.workload,
      "k8s.pod.name": fields.pod,
    });
  },
);

/** Baggage-like text: members, properties, escapes (some broken), and prototype keys. */
const memberArb = fc.oneof(
  fc.string({ unit: "binary", maxLength: 30 }),
  fc
    .tuple(
      fc.oneof(
        fc.constantFrom("__proto__", "constructor", "k8s.workload.name", " k ", "", " "),
        fc.string({ maxLength: 8 }),
      ),
      fc.oneof(
        fc.constantFrom("%", "%E0%A4%A", "%41", "a;p=1", "=", " v "),
        fc.string({ unit: "binary", maxLength: 8 }),
      ),
    )
    .map(([k, v]) => `${k}=${v}`),
);
const baggageArb = fc.oneof(
  fc.array(memberArb, { maxLength: 8 }).map((m) => m.join(",")),
  fc.array(
    fc.array(memberArb, { maxLength: 4 }).map((m) => m.join(",")),
    { maxLength: 3 },
  ),
  fc.constant(undefined),
);

testProp(
  "any baggage: never throws, a plain object of trimmed keys and string values, no more keys than members",
  [baggageArb],
  (t, header) => {
    const out = parseBaggage(header);
    t.is(Object.getPrototypeOf(out), Object.prototype);
    const members = (Array.isArray(header) ? header.join(",") : (header ?? "")).split(",").length;
    const keys = Object.keys(out);
    t.true(keys.length <= members);
    for (const k of keys) {
      t.true(k.length > 0 && k === k.trim());
      t.is(typeof out[k], "string");
    }
    t.is(({} as Record<string, unknown>).polluted, undefined);
  },
);
