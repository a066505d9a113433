/**
 * One seed and one run count for every property test, so `make test` explores the same cases each time and a
 * failure reproduces: fast-check prints the seed, the path and the shrunk counterexample in ava's output. Set
 * AMBIT_PROPERTY_SEED to explore other cases, AMBIT_PROPERTY_RUNS for a longer run (the suite's default keeps all
 * property files to a few seconds on the 2-core test machine).
 */
import { fc } from "@fast-check/ava";

const envInt = (name: string, fallback: number): number => {
  const v = Number(process.env[name]);
  return Number.isSafeInteger(v) && v > 0 ? v : fallback;
};

export const SEED = envInt("AMBIT_PROPERTY_SEED", 14_2026);
export const RUNS = envInt("AMBIT_PROPERTY_RUNS", 300);

fc.configureGlobal({ seed: SEED, numRuns: RUNS });

/** Runs for properties whose single case is costly (large buffers, many splits): a tenth of the rest, at least 30. */
export const FEW = Math.max(30, Math.floor(RUNS / 10));
