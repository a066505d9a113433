import test from "ava";
import { refreshDelayMs, retryDelayMs } from "../../../agent/identity/refresh-policy.js";
import { MAX_BACKDATE_SEC, randomSerialHex, validityWindow } from "../../../agent/identity/x509-profile.js";

test("refresh at half the remaining life, jitter within ±10%", (t) => {
  t.is(
    refreshDelayMs(0, 10_000, 0.1, () => 0.5),
    5000,
  );
  t.is(
    refreshDelayMs(0, 10_000, 0.1, () => 0),
    4500,
  );
  t.is(
    refreshDelayMs(0, 10_000, 0.1, () => 1),
    5500,
  );
  t.is(refreshDelayMs(5000, 1000), 0);
  t.is(refreshDelayMs(0, 400 * 24 * 3600 * 1000, 0), 2 ** 31 - 1);
});

test("retry backoff doubles and is capped", (t) => {
  const p = { initialMs: 100, maxMs: 1000 };
  t.deepEqual(
    [1, 2, 3, 4, 5, 10].map((n) => retryDelayMs(n, p, 0)),
    [100, 200, 400, 800, 1000, 1000],
  );
  for (let i = 0; i < 50; i++) {
    const d = retryDelayMs(3, p);
    t.true(d >= 360 && d <= 440);
  }
});

test("validity: full lifetime ahead, backdate clamped to the lifetime and 60 s, whole seconds", (t) => {
  const now = 1_700_000_000_500;
  const day = validityWindow(now, 86400);
  t.is(day.notAfter.getTime(), 1_700_000_000_000 + 86400_000);
  t.is(day.notBefore.getTime(), 1_700_000_000_000 - MAX_BACKDATE_SEC * 1000);
  const short = validityWindow(now, 3);
  t.is(short.notBefore.getTime(), 1_700_000_000_000 - 3000);
  t.is(short.notAfter.getTime(), 1_700_000_000_000 + 3000);
  const issuer = { notBefore: new Date(1_700_000_000_000 - 1000), notAfter: new Date(1_700_000_001_000) };
  const clamped = validityWindow(now, 86400, issuer);
  t.deepEqual([clamped.notBefore, clamped.notAfter], [issuer.notBefore, issuer.notAfter]);
  t.throws(() => validityWindow(now, 0), { instanceOf: RangeError });
});

test("serials are 16 bytes, positive, distinct", (t) => {
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const s = randomSerialHex();
    t.is(s.length, 32);
    t.true(Number.parseInt(s.slice(0, 2), 16) >= 0x40 && Number.parseInt(s.slice(0, 2), 16) < 0x80);
    seen.add(s);
  }
  t.is(seen.size, 200);
});
