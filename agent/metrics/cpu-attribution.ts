/**
 * How much CPU a handshake and a GiB of proxied traffic cost, from process-wide samples. Pure.
 *
 * Method: the sampler cuts time into windows (a few seconds each) and records, per window, the process CPU seconds
 * (`process.cpuUsage()` user + system delta), the TLS handshakes completed and the bytes relayed. Over the recent
 * windows we fit the linear cost model
 *
 *     cpu = base + perHandshake * handshakes + perGiB * GiB
 *
 * by ordinary least squares (base is everything else: timers, pod-source polling, GC, idle). Each window's measured
 * CPU is then split between handshake / traffic / other in proportion to the model's estimate of each part, so the
 * attributed seconds always add up to what the kernel actually charged us: the model only decides the shares.
 *
 * Honest limits: it is a statistical estimate over the whole process (two agents in one process each see all of
 * it); a regressor that did not vary over the windows cannot be estimated and is left at 0 (its CPU lands in
 * "other"); when handshakes and bytes always move together they cannot be told apart and bytes are dropped from the
 * fit (their cost is folded into handshakes). Bytes are counted when a connection closes, so a long connection's
 * bytes land in the window it ends in.
 */

export interface CpuWindow {
  cpuSeconds: number;
  handshakes: number;
  bytes: number;
}

export interface CpuModel {
  baseSeconds: number;
  perHandshake: number;
  perGiB: number;
  /** Windows the fit used. */
  windows: number;
}

export interface CpuShares {
  handshake: number;
  traffic: number;
  other: number;
}

const GIB = 1024 ** 3;

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

/** Least squares on centered data for the regressors given (0, 1 or 2 of them); undefined if singular. */
function slopes(xs: number[][], ys: number[]): number[] | undefined {
  const my = mean(ys);
  const cx = xs.map((col) => {
    const m = mean(col);
    return col.map((v) => v - m);
  });
  const cy = ys.map((v) => v - my);
  const dot = (a: number[], b: number[]) => a.reduce((s, v, i) => s + v * (b[i] as number), 0);
  if (cx.length === 0) return [];
  if (cx.length === 1) {
    const sxx = dot(cx[0] as number[], cx[0] as number[]);
    return sxx > 0 ? [dot(cx[0] as number[], cy) / sxx] : undefined;
  }
  const [a, b] = cx as [number[], number[]];
  const saa = dot(a, a);
  const sbb = dot(b, b);
  const sab = dot(a, b);
  const det = saa * sbb - sab * sab;
  // Relative test: nearly collinear regressors give huge, meaningless slopes of opposite signs.
  if (!(det > 1e-9 * saa * sbb)) return undefined;
  const say = dot(a, cy);
  const sby = dot(b, cy);
  return [(sbb * say - sab * sby) / det, (saa * sby - sab * say) / det];
}

const varies = (xs: number[]) => xs.some((v) => v !== xs[0]);

/** Fit the cost model over `windows` (oldest first or not: order does not matter). */
export function fitCpuModel(windows: readonly CpuWindow[]): CpuModel {
  const ys = windows.map((w) => w.cpuSeconds);
  const columns: Record<"h" | "g", number[]> = {
    h: windows.map((w) => w.handshakes),
    g: windows.map((w) => w.bytes / GIB),
  };
  let use = (["h", "g"] as const).filter((k) => varies(columns[k]));
  // Needs more windows than unknowns; otherwise the fit passes through every point and means nothing.
  while (use.length > 0 && windows.length < use.length + 2) use = use.slice(0, -1);
  let coef: Record<"h" | "g", number> = { h: 0, g: 0 };
  for (;;) {
    const s = slopes(
      use.map((k) => columns[k]),
      ys,
    );
    if (!s) {
      use = use.slice(0, -1); // singular: drop bytes first (see header)
      continue;
    }
    coef = { h: 0, g: 0 };
    use.forEach((k, i) => {
      coef[k] = s[i] as number;
    });
    // A negative cost is noise, not a refund: drop that regressor and fit again without it.
    const negative = use.find((k) => coef[k] < 0);
    if (!negative) break;
    use = use.filter((k) => k !== negative);
  }
  const base = mean(ys) - coef.h * mean(columns.h) - coef.g * mean(columns.g);
  return { baseSeconds: Math.max(0, base), perHandshake: coef.h, perGiB: coef.g, windows: windows.length };
}

/** Split one window's measured CPU by the model's estimated shares; the parts sum to `w.cpuSeconds`. */
export function attributeWindow(w: CpuWindow, model: CpuModel): CpuShares {
  const handshake = model.perHandshake * w.handshakes;
  const traffic = model.perGiB * (w.bytes / GIB);
  const estimate = handshake + traffic + model.baseSeconds;
  const cpu = Math.max(0, w.cpuSeconds);
  if (!(estimate > 0)) return { handshake: 0, traffic: 0, other: cpu };
  const h = (cpu * handshake) / estimate;
  const t = (cpu * traffic) / estimate;
  return { handshake: h, traffic: t, other: cpu - h - t };
}
