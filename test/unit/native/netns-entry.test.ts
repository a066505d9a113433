import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import test from "ava";
import { repositoryRoot } from "../../support/repository.js";

const ROOT = repositoryRoot(import.meta.url);
// Bindings that switch the thread's namespace; agent code reaches them only through agent/pod-netns.ts, which stops
// the process when the thread cannot come back.
const ENTERING = ["inNetns", "inNetnsFd", "connectInNetns", "connectInNetnsFd", "openListenerFdInNetns"];

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

test("agent code enters namespaces only through pod-netns.ts", (t) => {
  const offenders = sources(join(ROOT, "agent"))
    .filter((file) => relative(ROOT, file) !== join("agent", "pod-netns.ts"))
    .filter((file) => {
      const imports =
        readFileSync(file, "utf8").match(/import\s*{[^}]*}\s*from\s*"[^"]*native-bindings\/[^"]*"/g) ?? [];
      return imports.some((line) => ENTERING.some((name) => new RegExp(`\\b${name}\\b`).test(line)));
    })
    .map((file) => relative(ROOT, file));
  t.deepEqual(offenders, []);
});
