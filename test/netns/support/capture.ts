import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";

/** tcpdump inside a namespace, writing every TCP packet on `iface` to a file until stopped. */
export async function startCapture(netnsName: string, iface: string, file: string): Promise<() => Promise<Buffer>> {
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
  return async () => {
    const exited = once(child, "exit");
    child.kill("SIGINT");
    await exited;
    return readFileSync(file);
  };
}

/** The ALPN extension of a ClientHello offering exactly "h2": type 16, length 5, list length 3, "\x02h2". */
export const ALPN_H2_ONLY = Buffer.from([0x00, 0x10, 0x00, 0x05, 0x00, 0x03, 0x02, 0x68, 0x32]);
