import test from "ava";
import { formatForwarded } from "../../../agent/proxy/authority.js";

test("Forwarded names the app's address as RFC 7239 writes it: IPv6 quoted in brackets", (t) => {
  t.is(formatForwarded("10.0.1.5"), "for=10.0.1.5");
  t.is(formatForwarded("fd00::5"), 'for="[fd00::5]"');
  t.is(formatForwarded(""), "", "unknown address: no header");
  t.is(formatForwarded("not-an-ip"), "");
});
