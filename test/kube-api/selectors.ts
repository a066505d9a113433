import { AmbitError } from "../../agent/errors.js";

/**
 * Label and field selectors with the grammar and matching rules of k8s.io/apimachinery (labels.Parse and
 * fields.ParseSelector): `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, `a>1`, `a<1` for labels;
 * `f=v`, `f==v`, `f!=v` (with `\,` `\=` `\\` escapes) for fields. Pure.
 */

export class SelectorError extends AmbitError {
  constructor(message: string) {
    super("bad_selector", message);
  }
}

/** Selectors come from query strings; a real URL is far shorter, this only bounds the work one request costs. */
export const MAX_SELECTOR_CHARS = 16 * 1024;

export type LabelOperator = "exists" | "!" | "=" | "!=" | "in" | "notin" | "gt" | "lt";

export interface LabelRequirement {
  key: string;
  op: LabelOperator;
  values: string[];
}

export interface FieldRequirement {
  field: string;
  op: "=" | "!=";
  value: string;
}

const NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** A label key: `[prefix/]name`, prefix a DNS subdomain of at most 253 characters, name at most 63. */
export function isQualifiedName(key: string): boolean {
  const slash = key.indexOf("/");
  const name = slash < 0 ? key : key.slice(slash + 1);
  if (slash >= 0) {
    const prefix = key.slice(0, slash);
    if (prefix.length === 0 || prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix)) return false;
  }
  return name.length > 0 && name.length <= 63 && NAME.test(name);
}

/** A label value: empty, or at most 63 characters of the name alphabet. */
export function isLabelValue(value: string): boolean {
  return value === "" || (value.length <= 63 && NAME.test(value));
}

type Token = { kind: "id" | "op"; text: string };

const SPECIAL = new Set(["!", "=", ",", "(", ")", "<", ">"]);

function lex(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text.charAt(i);
    if (/\s/.test(c)) {
      i++;
    } else if (SPECIAL.has(c)) {
      const two = text.slice(i, i + 2);
      const op = two === "!=" || two === "==" ? two : c;
      tokens.push({ kind: "op", text: op });
      i += op.length;
    } else {
      let j = i;
      while (j < text.length && !SPECIAL.has(text.charAt(j)) && !/\s/.test(text.charAt(j))) j++;
      tokens.push({ kind: "id", text: text.slice(i, j) });
      i = j;
    }
  }
  return tokens;
}

/** Parses a label selector; "" selects everything. Throws SelectorError with the real server's kind of message. */
export function parseLabelSelector(text: string): LabelRequirement[] {
  if (text.length > MAX_SELECTOR_CHARS) throw new SelectorError(`label selector longer than ${MAX_SELECTOR_CHARS}`);
  const tokens = lex(text);
  let pos = 0;
  const peek = () => tokens[pos];
  const take = () => tokens[pos++];
  const expectId = (what: string): string => {
    const t = take();
    if (t?.kind !== "id") throw new SelectorError(`found '${t?.text ?? ""}', expected: ${what}`);
    return t.text;
  };
  const checkKey = (key: string) => {
    if (!isQualifiedName(key)) throw new SelectorError(`unable to parse requirement: invalid label key "${key}"`);
  };
  const checkValue = (v: string) => {
    if (!isLabelValue(v)) throw new SelectorError(`unable to parse requirement: invalid label value "${v}"`);
  };

  const requirement = (): LabelRequirement => {
    if (peek()?.text === "!" && peek()?.kind === "op") {
      take();
      const key = expectId("identifier after '!'");
      checkKey(key);
      return { key, op: "!", values: [] };
    }
    const key = expectId("identifier");
    checkKey(key);
    const next = peek();
    if (!next || (next.kind === "op" && next.text === ",")) return { key, op: "exists", values: [] };
    take();
    if (next.kind === "op" && (next.text === "=" || next.text === "==" || next.text === "!=")) {
      const v = peek();
      const value = v?.kind === "id" ? (take() as Token).text : "";
      if (v && !(v.kind === "id" || v.text === ",")) throw new SelectorError(`found '${v.text}', expected: identifier`);
      checkValue(value);
      return { key, op: next.text === "!=" ? "!=" : "=", values: [value] };
    }
    if (next.kind === "op" && (next.text === ">" || next.text === "<")) {
      const value = expectId("integer");
      if (!/^-?\d+$/.test(value)) throw new SelectorError(`unable to parse requirement: '${value}' is not an integer`);
      return { key, op: next.text === ">" ? "gt" : "lt", values: [value] };
    }
    if (next.kind === "id" && (next.text === "in" || next.text === "notin")) {
      if (take()?.text !== "(") throw new SelectorError(`found '${tokens[pos - 1]?.text ?? ""}', expected: '('`);
      const values = new Set<string>();
      let current = "";
      for (;;) {
        const t = take();
        if (!t) throw new SelectorError("found '', expected: ')'");
        if (t.kind === "op" && t.text === ")") break;
        if (t.kind === "op" && t.text === ",") {
          values.add(current);
          current = "";
        } else if (t.kind === "id" && current === "") {
          current = t.text;
        } else {
          throw new SelectorError(`found '${t.text}', expected: ',', or identifier`);
        }
      }
      values.add(current);
      for (const v of values) checkValue(v);
      return { key, op: next.text, values: [...values] };
    }
    throw new SelectorError(`found '${next.text}', expected: in, notin, =, ==, !=, gt, lt`);
  };

  const out: LabelRequirement[] = [];
  if (tokens.length === 0) return out;
  for (;;) {
    out.push(requirement());
    const t = take();
    if (!t) return out;
    if (!(t.kind === "op" && t.text === ","))
      throw new SelectorError(`found '${t.text}', expected: ',' or 'end of string'`);
  }
}

export function matchesLabels(
  selector: readonly LabelRequirement[],
  labels: Readonly<Record<string, string>>,
): boolean {
  for (const r of selector) {
    const has = Object.hasOwn(labels, r.key);
    const v = has ? labels[r.key] : undefined;
    let ok: boolean;
    switch (r.op) {
      case "exists":
        ok = has;
        break;
      case "!":
        ok = !has;
        break;
      case "=":
      case "in":
        ok = v !== undefined && r.values.includes(v);
        break;
      case "!=":
      case "notin":
        ok = v === undefined || !r.values.includes(v);
        break;
      case "gt":
      case "lt": {
        const n = v !== undefined && /^-?\d+$/.test(v) ? Number(v) : Number.NaN;
        const limit = Number(r.values[0]);
        ok = r.op === "gt" ? n > limit : n < limit;
        break;
      }
    }
    if (!ok) return false;
  }
  return true;
}

/** Splits on `sep` where it is not escaped by a backslash. */
function splitUnescaped(text: string, sep: string): string[] {
  const parts: string[] = [];
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === "\\") i++;
    else if (text[i] === sep) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts;
}

function unescapeFieldValue(raw: string): string {
  let out = "";
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charAt(i);
    if (c === "\\") {
      const n = raw.charAt(i + 1);
      if (n !== "\\" && n !== "," && n !== "=") throw new SelectorError(`invalid escape sequence in "${raw}"`);
      out += n;
      i++;
    } else if (c === "," || c === "=") {
      throw new SelectorError(`invalid field selector value "${raw}": unescaped ${c}`);
    } else {
      out += c;
    }
  }
  return out;
}

/**
 * Parses a field selector; "" selects everything. `supported` is the resource's set of field labels: any other
 * label is refused ("field label not supported"), as the real server does.
 */
export function parseFieldSelector(text: string, supported: ReadonlySet<string>): FieldRequirement[] {
  if (text.length > MAX_SELECTOR_CHARS) throw new SelectorError(`field selector longer than ${MAX_SELECTOR_CHARS}`);
  if (text === "") return [];
  return splitUnescaped(text, ",").map((term) => {
    let at = -1;
    let op = "";
    for (let i = 0; i < term.length && at < 0; i++) {
      if (term[i] === "\\") {
        i++;
        continue;
      }
      for (const candidate of ["!=", "==", "="]) {
        if (term.startsWith(candidate, i)) {
          at = i;
          op = candidate;
          break;
        }
      }
    }
    if (at < 0) throw new SelectorError(`invalid selector: '${term}'; can't understand '${term}'`);
    const field = term.slice(0, at);
    if (!supported.has(field)) throw new SelectorError(`field label not supported: ${field}`);
    return { field, op: op === "!=" ? "!=" : "=", value: unescapeFieldValue(term.slice(at + op.length)) };
  });
}

/** `fields` holds every supported label's value ("" when the object lacks the field). */
export function matchesFields(
  selector: readonly FieldRequirement[],
  fields: Readonly<Record<string, string>>,
): boolean {
  return selector.every((r) => ((fields[r.field] ?? "") === r.value) === (r.op === "="));
}
