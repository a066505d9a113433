import test from "ava";
import { decodeSockaddr, encodeSockaddr, familyOf } from "../../../native-bindings/sockaddr.js";

test("IPv4 sockaddr round-trips with the port in network order", (t) => {
  const buf = encodeSockaddr("10.1.2.3", 15001);
  t.is(buf.length, 16);
  t.is(buf.readUInt16BE(2), 15001);
  t.deepEqual(decodeSockaddr(buf), { address: "10.1.2.3", port: 15001, family: 4 });
});

test("IPv6 sockaddr round-trips, including compressed and v4-mapped forms", (t) => {
  for (const address of ["fd00:1:2::3", "::1", "::", "2001:db8::ffff:1", "fe80::1:2:3:4"]) {
    const decoded = decodeSockaddr(encodeSockaddr(address, 80));
    t.is(decoded.address, address);
    t.is(decoded.family, 6);
  }
  t.is(decodeSockaddr(encodeSockaddr("::ffff:1.2.3.4", 1)).address, "::ffff:1.2.3.4");
});

test("only IP literals are accepted", (t) => {
  t.is(familyOf("127.0.0.1"), 4);
  t.is(familyOf("::1"), 6);
  t.throws(() => familyOf("localhost"), { instanceOf: TypeError });
});
