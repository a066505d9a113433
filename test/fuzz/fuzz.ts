/**
 * `make fuzz`: coverage-guided fuzzing of the targets in targets.ts, in plain Node.
 *
 * Why not Jazzer.js (@jazzer.js/core, the registry's libFuzzer-based fuzzer): 4.0.0 installs, but its only
 * linux-x64 prebuilt addon needs GLIBC_2.38 and this Debian 12 machine has glibc 2.36 (dlopen fails: "version
 * `GLIBC_2.38' not found"); the package ships no C++ sources to rebuild it. 2.1.0 and older fetch their prebuilt
 * addon from github.com at install time (not reachable here) and fall back to a build that needs the `prebuild` tool
 * and LLVM's libFuzzer sources, also from GitHub. jsfuzz (istanbul-instrumented) cannot load ES modules.
 *
 * So coverage comes from V8 itself: precise block coverage through the inspector, taken (and reset) after every
 * input, about 0.3 ms a take. An input that reaches a block of ambit's code not seen before, or a block a new
 * power-of-two number of times (AFL's hit buckets), joins the working corpus; new inputs are mutations and splices
 * of corpus entries with the target's dictionary. An input that makes a target throw is written to
 * test/fuzz/corpus/<target>/ (kept in the repo; replay.test.ts runs them all in `make test`).
 *
 * Usage: node dist/test/fuzz/fuzz.js [target ...] [--seconds N] [--seed N]   (all targets, 60 s each, by default)
 * The working corpus lives in .fuzz/<target>/ (not in the repo) and carries over between runs.
 */
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { CORPUS, type FuzzTarget, TARGETS } from "./targets.js";

const WORK = join(fileURLToPath(new URL("../../../", import.meta.url)), ".fuzz");
/** Inputs are kept small: every parser here has a limit far below, and short inputs run and shrink faster. */
const MAX_INPUT = 4096;

type Coverage = {
  result: { url: string; functions: { ranges: { startOffset: number; endOffset: number; count: number }[] }[] }[];
};

class Inspector {
  readonly #session = new Session();

  constructor() {
    this.#session.connect();
    this.#post("Profiler.enable");
    this.#post("Profiler.startPreciseCoverage", { callCount: true, detailed: true });
  }

  /** The blocks of ambit's code (and node-forge's, which parses CSRs) run since the last take, each with its hit bucket. */
  take(): string[] {
    const cov = this.#post("Profiler.takePreciseCoverage") as Coverage;
    const keys: string[] = [];
    for (const script of cov.result) {
      if (!script.url.includes("/dist/agent/") && !script.url.includes("/node_modules/node-forge/")) continue;
      for (const fn of script.functions) {
        for (const r of fn.ranges) {
          if (r.count > 0)
            keys.push(`${script.url}:${r.startOffset}:${r.endOffset}:${Math.min(16, Math.floor(Math.log2(r.count)))}`);
        }
      }
    }
    return keys;
  }

  /** The in-thread session answers synchronously. */
  #post(method: string, params?: object): unknown {
    let out: unknown;
    let error: Error | null = null;
    this.#session.post(method, params, (err, result) => {
      error = err;
      out = result;
    });
    if (error) throw error;
    return out;
  }
}

/** xorshift32: a seeded run is repeatable. */
class Rand {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0 || 1;
  }
  next(): number {
    this.#s ^= this.#s << 13;
    this.#s ^= this.#s >>> 17;
    this.#s ^= this.#s << 5;
    return this.#s >>> 0;
  }
  below(n: number): number {
    return n <= 0 ? 0 : this.next() % n;
  }
}

const MAGIC = [0, 1, 0x7f, 0x80, 0xff, 0x3f, 0x40, 0x20, 0x10, 0x09, 0x04, 0x01];

function mutate(r: Rand, input: Buffer, corpus: Buffer[], dictionary: Buffer[]): Buffer {
  let b = Buffer.from(input);
  for (let n = 1 + r.below(4); n > 0; n--) {
    const at = r.below(b.length + 1);
    switch (r.below(9)) {
      case 0:
        if (b.length) b[r.below(b.length)] ^= 1 << r.below(8);
        break;
      case 1:
        if (b.length) b[r.below(b.length)] = r.below(256);
        break;
      case 2:
        if (b.length) b[r.below(b.length)] = MAGIC[r.below(MAGIC.length)] as number;
        break;
      case 3:
        b = Buffer.concat([
          b.subarray(0, at),
          Buffer.from(Array.from({ length: 1 + r.below(8) }, () => r.below(256))),
          b.subarray(at),
        ]);
        break;
      case 4:
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + r.below(16))]);
        break;
      case 5: {
        const from = r.below(b.length);
        b = Buffer.concat([b.subarray(0, at), b.subarray(from, from + 1 + r.below(32)), b.subarray(at)]);
        break;
      }
      case 6: {
        const other = corpus[r.below(corpus.length)] as Buffer;
        const from = r.below(other.length);
        b = Buffer.concat([b.subarray(0, at), other.subarray(from, from + 1 + r.below(64)), b.subarray(at)]);
        break;
      }
      case 7:
        if (dictionary.length) {
          b = Buffer.concat([b.subarray(0, at), dictionary[r.below(dictionary.length)] as Buffer, b.subarray(at)]);
        }
        break;
      default:
        if (b.length >= 4) {
          const p = r.below(b.length - 3);
          b.writeUInt32BE(r.next(), p);
        }
    }
  }
  return b.length > MAX_INPUT ? b.subarray(0, MAX_INPUT) : b;
}

function readDir(dir: string): Buffer[] {
  try {
    return readdirSync(dir).map((f) => readFileSync(join(dir, f)));
  } catch {
    return [];
  }
}

const name = (b: Buffer) => createHash("sha256").update(b).digest("hex").slice(0, 16);

/** Where the error was raised: findings with the same place are one bug, saved once. */
function place(err: unknown): string {
  const stack = err instanceof Error ? (err.stack ?? "") : String(err);
  const frames = stack.split("\n").filter((l) => l.trim().startsWith("at "));
  return `${err instanceof Error ? err.name : typeof err}|${frames.slice(0, 3).join("|")}`;
}

async function fuzz(target: FuzzTarget, seconds: number, seed: number, inspector: Inspector): Promise<number> {
  const r = new Rand(seed);
  const saved = join(CORPUS, target.name);
  const work = join(WORK, target.name);
  mkdirSync(work, { recursive: true });
  const corpus: Buffer[] = [];
  const seen = new Set<string>();
  const places = new Set<string>();
  let execs = 0;
  let findings = 0;

  const tryInput = async (input: Buffer, keep: boolean): Promise<void> => {
    inspector.take();
    let failure: unknown;
    try {
      await target.run(input);
    } catch (err) {
      failure = err;
    }
    execs++;
    const fresh = inspector.take().filter((k) => !seen.has(k));
    for (const k of fresh) seen.add(k);
    if (failure !== undefined) {
      const where = place(failure);
      if (!places.has(where)) {
        places.add(where);
        findings++;
        mkdirSync(saved, { recursive: true });
        writeFileSync(join(saved, `crash-${name(input)}`), input);
        console.log(`${target.name}: FINDING saved as crash-${name(input)}: ${(failure as Error).stack ?? failure}`);
      }
      return;
    }
    if (keep || fresh.length > 0) {
      corpus.push(input);
      if (fresh.length > 0) writeFileSync(join(work, name(input)), input);
    }
  };

  for (const input of [...(await target.seeds()), ...readDir(saved), ...readDir(work)]) await tryInput(input, true);
  if (corpus.length === 0) corpus.push(Buffer.alloc(0));
  const start = performance.now();
  let lastReport = start;
  while (performance.now() - start < seconds * 1000) {
    // Newer corpus entries (found later, usually deeper) are picked more often.
    const pick =
      corpus.length - 1 - Math.min(corpus.length - 1, Math.floor(Math.sqrt(r.below(corpus.length * corpus.length))));
    await tryInput(mutate(r, corpus[corpus.length - 1 - pick] as Buffer, corpus, target.dictionary), false);
    if (performance.now() - lastReport > 10_000) {
      lastReport = performance.now();
      console.log(
        `${target.name}: ${execs} runs, ${corpus.length} in corpus, ${seen.size} blocks, ${findings} findings`,
      );
    }
  }
  const rate = Math.round(execs / seconds);
  console.log(
    `${target.name}: done, ${execs} runs (${rate}/s), ${corpus.length} in corpus, ${seen.size} blocks, ${findings} findings`,
  );
  return findings;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const option = (flag: string, fallback: number) => {
    const i = args.indexOf(flag);
    if (i < 0) return fallback;
    const v = Number(args.splice(i, 2)[1]);
    if (!Number.isFinite(v) || v <= 0) throw new Error(`${flag} needs a positive number`);
    return v;
  };
  const seconds = option("--seconds", 60);
  const seed = option("--seed", Date.now() % 2 ** 31);
  const chosen = args.length ? TARGETS.filter((t) => args.includes(t.name)) : TARGETS;
  if (chosen.length !== (args.length || TARGETS.length)) {
    throw new Error(`unknown target in ${args.join(" ")}; targets: ${TARGETS.map((t) => t.name).join(", ")}`);
  }
  console.log(`fuzz: seed ${seed}, ${seconds} s per target`);
  const inspector = new Inspector();
  let findings = 0;
  for (const target of chosen) findings += await fuzz(target, seconds, seed, inspector);
  if (findings > 0) {
    console.log(`fuzz: ${findings} findings saved under test/fuzz/corpus/; make test replays them`);
    process.exitCode = 1;
  }
}

await main();
