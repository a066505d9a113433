/**
 * Parser for Node's `X509Certificate.subjectAltName` string ("URI:spiffe://a, DNS:b"). Node JSON-quotes a value
 * that contains a separator or quote (`URI:"spiffe://a, b"`), so a plain split on ", " would let a crafted SAN
 * smuggle a second entry; this reads quoted values as JSON strings.
 */
export interface SanEntry {
  type: string;
  value: string;
}

export function parseSubjectAltName(text: string | undefined): SanEntry[] {
  const entries: SanEntry[] = [];
  if (!text) return entries;
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(":", i);
    if (colon < 0) throw new Error(`malformed subjectAltName near ${JSON.stringify(text.slice(i, i + 40))}`);
    const type = text.slice(i, colon);
    let value: string;
    let end: number;
    if (text[colon + 1] === '"') {
      end = colon + 2;
      while (end < text.length && text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      if (end >= text.length) throw new Error("unterminated quoted subjectAltName value");
      value = JSON.parse(text.slice(colon + 1, end + 1)) as string;
      end += 1;
    } else {
      const sep = text.indexOf(", ", colon + 1);
      end = sep < 0 ? text.length : sep;
      value = text.slice(colon + 1, end);
    }
    entries.push({ type, value });
    if (end < text.length && text.slice(end, end + 2) !== ", ") throw new Error("malformed subjectAltName separator");
    i = end + 2;
  }
  return entries;
}
