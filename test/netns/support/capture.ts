import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, readFileSync } from "node:fs";

/** tcpdump inside a namespace, writing every TCP packet on `iface` to a file until stopped. */
export async function startCapture(
  netnsName: string,
  iface: string,
  file: string,
): Promise<(lastMarker?: string) => Promise<Buffer>> {
  const child: ChildProcess = spawn(
    "ip",
    [
      "netns",
      "exec",
      netnsName,
      "tcpdump",
      "--immediate-mode",
      "-Z",
      "root",
      "-i",
      iface,
      "-U",
      "-s",
      "0",
      "-w",
      file,
      "tcp",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  await new Promise<void>((resolve, reject) => {
    child.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes("listening on")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`tcpdump exited (${code}): ${stderr}`)));
  });
  /**
   * Stop once `lastMarker` (bytes the test sent last) is in the file, so no packet is still in flight inside
   * tcpdump when it is interrupted; give up waiting after a few seconds and stop anyway.
   */
  return async (lastMarker?: string) => {
    for (let waited = 0; lastMarker && waited < 5000 && !fileIncludes(file, lastMarker); waited += 50) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const exited = once(child, "exit");
    child.kill("SIGINT");
    await exited;
    return readFileSync(file);
  };
}

function fileIncludes(file: string, text: string): boolean {
  return existsSync(file) && readFileSync(file).includes(text);
}

/** The ALPN extension of a ClientHello offering exactly "h2": type 16, length 5, list length 3, "\x02h2". */
export const ALPN_H2_ONLY = Buffer.from([0x00, 0x10, 0x00, 0x05, 0x00, 0x03, 0x02, 0x68, 0x32]);
