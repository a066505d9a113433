import { isIP } from "node:net";
import { fc, testProp } from "@fast-check/ava";
import { formatAuthority, parseAuthority } from "../../../agent/proxy/authority.js";
import "./settings.js";

/**
 * `:authority` is what a peer writes in its CONNECT (the only header ambit reads there): parsing never throws,
 * accepts only what an address and port can be, and gives back what the formatting side wrote.
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
