/**
 * Finds private keys in text a test captured (log lines, admin documents, command output): any PEM private key
 * block or "PRIVATE KEY" at all, any RSA private key's DER in base64 (PKCS#8 or PKCS#1, whoever's key it is), and
 * for the keys the test knows, their bytes in every form a careless serializer could write them: each PEM body line,
 * and the private exponent, primes and CRT values in base64, base64url, hex and as a JSON byte array.
 */
import { createPrivateKey } from "node:crypto";

const GENERIC: Array<[string, RegExp]> = [
  ["a PEM private key", /-----BEGIN [A-Z ]*PRIVATE KEY-----/],
  ['"PRIVATE KEY"', /PRIVATE KEY/],
  // DER of PKCS#8 rsaEncryption (version 0, the algorithm, then the key octet string), in base64 from its start.
  ["a PKCS#8 RSA key in base64", /ADANBgkqhkiG9w0BAQEFAAS/],
  ["a PKCS#1 RSA key in base64", /MII[A-Za-z0-9+/]{2}QIBAAKC/],
];

const PRIVATE_PARTS = ["d", "p", "q", "dp", "dq", "qi"] as const;

/** The forms of one key's secret bytes, each labelled for the failure message. */
export function keyNeedles(keyPem: string): Array<[string, string]> {
  const needles: Array<[string, string]> = [];
  const body = keyPem.split("\n").filter((l) => l && !l.startsWith("-----"));
  // The last line may be short enough to occur by chance; every full 64-character line is the key's alone.
  for (const line of body) if (line.length === 64) needles.push(["a line of the key's PEM", line]);
  const jwk = createPrivateKey(keyPem).export({ format: "jwk" }) as Record<string, string>;
  for (const part of PRIVATE_PARTS) {
    const bytes = Buffer.from(jwk[part] as string, "base64url");
    needles.push(
      [`${part} in base64url`, bytes.toString("base64url")],
      [`${part} in base64`, bytes.toString("base64").replace(/=+$/, "")],
      [`${part} in hex`, bytes.toString("hex")],
      [`${part} in HEX`, bytes.toString("hex").toUpperCase()],
      [`${part} as bytes`, Array.from(bytes.subarray(0, 16)).join(",")],
    );
  }
  return needles;
}

/** What in `text` looks like a private key, or like one of `keys`: empty when nothing does. */
export function secretLeaks(text: string, keys: readonly string[]): string[] {
  const found: string[] = [];
  for (const [what, pattern] of GENERIC) {
    const m = pattern.exec(text);
    if (m)
      found.push(
        `${what} at offset ${m.index}: ${JSON.stringify(text.slice(Math.max(0, m.index - 80), m.index + 80))}`,
      );
  }
  for (const [i, key] of keys.entries()) {
    for (const [what, needle] of keyNeedles(key)) {
      const at = text.indexOf(needle);
      if (at >= 0) found.push(`key #${i}: ${what} at offset ${at}`);
    }
  }
  return found;
}
