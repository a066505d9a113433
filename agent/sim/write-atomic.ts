import { randomBytes } from "node:crypto";
import { rename, rm, writeFile } from "node:fs/promises";

/**
 * Writes a file the way a well-behaved producer of manifests should: to a temp file in the same directory, then
 * rename, so a watcher never reads half a file. A string is written as is (tests use it for malformed files),
 * anything else as JSON.
 */
export async function writeFileAtomic(path: string, content: unknown): Promise<void> {
  const text = typeof content === "string" ? content : `${JSON.stringify(content, null, 2)}\n`;
  const tmp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    await writeFile(tmp, text, { mode: 0o644 });
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
