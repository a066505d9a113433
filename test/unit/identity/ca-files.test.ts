import { chmod, chown, mkdir, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { loadOrCreateCa } from "../../../agent/identity/ca-files.js";
import { IdentityError } from "../../../agent/identity/errors.js";
import { capturingLogger } from "../../support/log-lines.js";
import { secretLeaks } from "../../support/secret-leaks.js";
import { TD } from "./helpers.js";

const mode = async (path: string) => ((await stat(path)).mode & 0o777).toString(8);

async function tempDir(t: import("ava").ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "ambit-ca-files-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test("a new CA directory, and every directory made for it, is 0700; the key 0600; the log holds no key", async (t) => {
  const dir = await tempDir(t);
  const caDir = join(dir, "var", "lib", "ambit-ca");
  const { logger, lines } = capturingLogger("debug");
  await loadOrCreateCa(caDir, { trustDomain: TD, logger });
  t.is(await mode(join(dir, "var")), "700");
  t.is(await mode(caDir), "700");
  t.is(await mode(join(caDir, "ca.key")), "600");
  t.is(await mode(join(caDir, "ca.crt")), "644");
  await loadOrCreateCa(caDir, { trustDomain: TD, logger });
  const key = await readFile(join(caDir, "ca.key"), "utf8");
  t.is(lines.length, 2, "generated, then loaded");
  t.deepEqual(secretLeaks(JSON.stringify(lines), [key]), []);
});

test("an existing CA directory readable by others is made 0700 before the root is written, with a warning", async (t) => {
  const dir = await tempDir(t);
  const caDir = join(dir, "ca");
  await mkdir(caDir);
  await chmod(caDir, 0o755);
  const { logger, lines } = capturingLogger("debug");
  await loadOrCreateCa(caDir, { trustDomain: TD, logger });
  t.is(await mode(caDir), "700");
  t.like(lines.find((l) => l.level === 40) ?? {}, { dir: caDir, was: "0755" });
});

test("a CA key readable by others (copied in by hand) is made 0600 when loaded, with a warning", async (t) => {
  const dir = await tempDir(t);
  const caDir = join(dir, "ca");
  await loadOrCreateCa(caDir, { trustDomain: TD });
  await chmod(join(caDir, "ca.key"), 0o644);
  const { logger, lines } = capturingLogger("debug");
  await loadOrCreateCa(caDir, { trustDomain: TD, logger });
  t.is(await mode(join(caDir, "ca.key")), "600");
  t.like(lines.find((l) => l.level === 40) ?? {}, { file: join(caDir, "ca.key"), was: "0644" });
});

test("a CA directory others can write to, or owned by another user, is refused: the root could be planted", async (t) => {
  const dir = await tempDir(t);
  const shared = join(dir, "shared");
  await mkdir(shared);
  await chmod(shared, 0o1777);
  const planted = await t.throwsAsync(loadOrCreateCa(shared, { trustDomain: TD }), { instanceOf: IdentityError });
  t.is(planted?.code, "ca_files");
  t.regex(planted?.message ?? "", /writable by others \(mode 0777\)/);

  const theirs = join(dir, "theirs");
  await mkdir(theirs, { mode: 0o700 });
  // Another user's directory: only root can hand one over, and only a root test process can see this case.
  if (process.getuid?.() !== 0) return t.log("not root: the ownership case is not exercised");
  await chown(theirs, 65534, 65534);
  const foreign = await t.throwsAsync(loadOrCreateCa(theirs, { trustDomain: TD }), { instanceOf: IdentityError });
  t.regex(foreign?.message ?? "", /belongs to uid 65534/);
});
