import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import test from "ava";
import { CORPUS, TARGETS } from "./targets.js";

/**
 * Every input saved under test/fuzz/corpus/<target>/ (what `make fuzz` found, and seeds that reach deep paths) runs
 * through its target in `make test`: a finding stays fixed.
 */

test("every corpus directory belongs to a fuzz target", (t) => {
  const names = TARGETS.map((target) => target.name);
  for (const dir of readdirSync(CORPUS)) t.true(names.includes(dir), `test/fuzz/corpus/${dir} has no target`);
});

for (const target of TARGETS) {
  test(`${target.name}: every saved input is handled as the parser promises`, async (t) => {
    const dir = join(CORPUS, target.name);
    const files = readdirSync(dir);
    t.true(files.length > 0, `no saved inputs in ${dir}`);
    for (const file of files) {
      await t.notThrowsAsync(async () => target.run(readFileSync(join(dir, file))), `${target.name}/${file}`);
    }
  });
}
