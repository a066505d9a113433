import { open } from "node:fs/promises";

/**
 * Reads a file the API configuration names (kubeconfig, CA bundle, client certificate or key, token), refusing
 * one larger than `maxBytes` without reading past that: whatever a path points at (a device, a huge file by
 * mistake) costs at most one chunk more than the limit.
 */
export async function readLimited(path: string, maxBytes: number): Promise<Buffer> {
  const fh = await open(path, "r");
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(Math.min(64 * 1024, maxBytes + 1 - total));
      const { bytesRead } = await fh.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) return Buffer.concat(chunks, total);
      chunks.push(chunk.subarray(0, bytesRead));
      total += bytesRead;
      if (total > maxBytes) throw new RangeError(`larger than ${maxBytes} bytes`);
    }
  } finally {
    await fh.close();
  }
}

/** CA bundles, certificates, keys and tokens are KBs; a system-wide CA bundle is ~220 KB. */
export const MAX_CREDENTIAL_FILE_BYTES = 1024 * 1024;
