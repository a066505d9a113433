import test from "ava";
import { attributeWindow, type CpuWindow, fitCpuModel } from "../../../agent/metrics/cpu-attribution.js";

const GIB = 1024 ** 3;

test("recovers a known cost model from windows of mixed load", (t) => {
  const windows: CpuWindow[] = [];
  for (let i = 0; i < 40; i += 1) {
    const handshakes = (i * 7) % 23;
    const bytes = ((i * 13) % 17) * 0.1 * GIB;
    windows.push({ cpuSeconds: 0.05 + 0.002 * handshakes + 1.5 * (bytes / GIB), handshakes, bytes });
  }
  const m = fitCpuModel(windows);
  t.true(Math.abs(m.perHandshake - 0.002) < 1e-9);
  t.true(Math.abs(m.perGiB - 1.5) < 1e-9);
  t.true(Math.abs(m.baseSeconds - 0.05) < 1e-9);
  t.is(m.windows, 40);
});

test("attribution splits the measured CPU by the model's shares and sums to it", (t) => {
  const model = { baseSeconds: 0.1, perHandshake: 0.01, perGiB: 2, windows: 10 };
  const s = attributeWindow({ cpuSeconds: 0.6, handshakes: 10, bytes: 0.1 * GIB }, model);
  // estimates: handshake 0.1, traffic 0.2, other 0.1 -> shares 1/4, 1/2, 1/4 of the measured 0.6
  t.true(Math.abs(s.handshake - 0.15) < 1e-12);
  t.true(Math.abs(s.traffic - 0.3) < 1e-12);
  t.true(Math.abs(s.handshake + s.traffic + s.other - 0.6) < 1e-12);
});

test("what cannot be estimated is not invented", (t) => {
  t.deepEqual(fitCpuModel([]), { baseSeconds: 0, perHandshake: 0, perGiB: 0, windows: 0 });
  // No handshakes ever: their cost stays 0, traffic is still fitted.
  const onlyBytes = [1, 2, 3, 4].map((g) => ({ cpuSeconds: 0.5 * g, handshakes: 0, bytes: g * GIB }));
  const m = fitCpuModel(onlyBytes);
  t.is(m.perHandshake, 0);
  t.true(Math.abs(m.perGiB - 0.5) < 1e-9);
  // Handshakes and bytes always in lockstep: indistinguishable, so bytes are dropped and handshakes carry it.
  const lockstep = [1, 2, 3, 4, 5].map((n) => ({ cpuSeconds: 0.01 * n, handshakes: n, bytes: n * GIB }));
  const l = fitCpuModel(lockstep);
  t.is(l.perGiB, 0);
  t.true(Math.abs(l.perHandshake - 0.01) < 1e-9);
  // Noise that would make a cost negative is dropped, not reported as a refund.
  const noisy = [
    { cpuSeconds: 0.3, handshakes: 0, bytes: 0 },
    { cpuSeconds: 0.2, handshakes: 10, bytes: 0 },
    { cpuSeconds: 0.1, handshakes: 20, bytes: 0 },
  ];
  t.is(fitCpuModel(noisy).perHandshake, 0);
  const idle = attributeWindow({ cpuSeconds: 0.2, handshakes: 0, bytes: 0 }, fitCpuModel([]));
  t.deepEqual(idle, { handshake: 0, traffic: 0, other: 0.2 });
});
