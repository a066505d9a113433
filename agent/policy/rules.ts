/**
 * Istio AuthorizationPolicy rules compiled for L4 enforcement. Pure.
 *
 * A rule matches a connection when each part it has matches: any of its `from` sources, any of its `to`
 * operations, and every `when` condition. Inside a source or operation every field present must match; a field
 * matches when any of its values does, a not-field when none does. An absent or empty part matches anything, so
 * `{}` matches every connection.
 *
 * A tunnel carries bytes, not requests: methods, paths, hosts, request principals, `request.*` conditions and any
 * condition key not listed in L4_KEYS cannot be seen here. The fail-safe choice is ztunnel's: an ALLOW rule that
 * names any of them never matches (it allows less), and a DENY rule is read without them (it denies more).
 * `l7` lists what a rule named, for the warning and /config_dump.
 *
 * A rule this code cannot read (a malformed CIDR, port or wildcard, a wrong type) is `broken`: it must never loosen
 * what is in force, so an ALLOW policy's broken rule matches nothing and a DENY policy's broken rule matches
 * everything (policy.ts).
 */
import { BlockList, isIP } from "node:net";
import { canonicalIp } from "../kube/ip.js";

/** What the destination agent knows of one inbound connection. */
export interface ConnectionAttributes {
  /** The verified peer's SPIFFE ID as Istio writes principals (`<trust-domain>/ns/<ns>/sa/<sa>`); "" for plaintext. */
  principal: string;
  /** The source namespace, from the verified principal; "" for plaintext. */
  namespace: string;
  sourceIp: string;
  destinationIp: string;
  destinationPort: number;
}

/** One value of principals, namespaces, ...: Istio's exact, `prefix*`, `*suffix` and `*` (any non-empty value). */
export interface StringMatch {
  kind: "exact" | "prefix" | "suffix" | "present";
  value: string;
}

/** Only the L4 fields of a source; an L7 field is named in the rule's `l7` and left out here. */
export interface Source {
  principals?: readonly StringMatch[];
  notPrincipals?: readonly StringMatch[];
  namespaces?: readonly StringMatch[];
  notNamespaces?: readonly StringMatch[];
  ipBlocks?: AddressSet;
  notIpBlocks?: AddressSet;
  remoteIpBlocks?: AddressSet;
  notRemoteIpBlocks?: AddressSet;
}

export interface Operation {
  ports?: ReadonlySet<number>;
  notPorts?: ReadonlySet<number>;
}

type ConditionKey = (typeof L4_KEYS)[number];

export interface Condition {
  key: ConditionKey;
  values?: ConditionValues;
  notValues?: ConditionValues;
}

type ConditionValues = readonly StringMatch[] | AddressSet | ReadonlySet<number>;

export interface CompiledRule {
  from?: readonly Source[];
  to?: readonly Operation[];
  when: readonly Condition[];
  /** The L7 fields and condition keys the rule names (`to.operation.methods`, `when[request.headers[x]]`, ...). */
  l7: readonly string[];
  /** Why the rule cannot be read; absent when it can. */
  broken?: string;
}

/** Condition keys with an L4 meaning (Istio's names). `remote.ip` is the source IP: no X-Forwarded-For at L4. */
const L4_KEYS = [
  "source.ip",
  "remote.ip",
  "source.namespace",
  "source.principal",
  "destination.ip",
  "destination.port",
] as const;

const SOURCE_L7 = ["requestPrincipals", "notRequestPrincipals"] as const;
const OPERATION_L7 = ["hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"] as const;
/** Far above any real policy; keeps a hostile one small (the converter already caps rules at 1,024). */
const MAX_LIST = 1024;
const MAX_VALUE = 1024;

/** A set of CIDRs of both families (Node's BlockList does the prefix matching). */
export class AddressSet {
  readonly #list = new BlockList();
  /** As given, for /config_dump and `ambit check`. */
  readonly cidrs: readonly string[];

  constructor(cidrs: readonly string[]) {
    for (const cidr of cidrs) {
      const parsed = parseCidr(cidr);
      if (!parsed) throw new RuleError(`${JSON.stringify(cidr)} is not an IP address or CIDR`);
      this.#list.addSubnet(parsed.address, parsed.prefix, parsed.family === 4 ? "ipv4" : "ipv6");
    }
    this.cidrs = cidrs;
  }

  has(ip: string): boolean {
    const c = canonicalIp(ip);
    if (c === undefined) return false;
    return this.#list.check(c, isIP(c) === 4 ? "ipv4" : "ipv6");
  }
}

class RuleError extends Error {}

function parseCidr(s: string): { address: string; prefix: number; family: 4 | 6 } | undefined {
  const [ip = "", bits, extra] = s.split("/");
  if (extra !== undefined) return undefined;
  const address = canonicalIp(ip);
  if (address === undefined) return undefined;
  const family = isIP(address) === 4 ? 4 : 6;
  const max = family === 4 ? 32 : 128;
  if (bits === undefined) return { address, prefix: max, family };
  if (!/^[0-9]{1,3}$/.test(bits) || Number(bits) > max) return undefined;
  return { address, prefix: Number(bits), family };
}

/** Compiles one rule of a policy (`rules[i]`, a plain JSON object by the converter's check). Never throws. */
export function compileRule(raw: unknown): CompiledRule {
  const l7: string[] = [];
  try {
    const rule = object(raw, "rule");
    const from = list(rule.from, "from").map((f, i) => compileSource(object(f, `from[${i}]`).source, i, l7));
    const to = list(rule.to, "to").map((t, i) => compileOperation(object(t, `to[${i}]`).operation, i, l7));
    const when: Condition[] = [];
    for (const [i, c] of list(rule.when, "when").entries()) {
      const condition = compileCondition(c, i, l7);
      if (condition) when.push(condition);
    }
    const out: CompiledRule = { when, l7 };
    if (from.length > 0) out.from = from;
    if (to.length > 0) out.to = to;
    return out;
  } catch (err) {
    if (!(err instanceof RuleError)) throw err;
    return { when: [], l7, broken: err.message };
  }
}

function compileSource(raw: unknown, i: number, l7: string[]): Source {
  const s = object(raw, `from[${i}].source`);
  for (const field of SOURCE_L7) if (s[field] !== undefined) l7.push(`from[${i}].source.${field}`);
  const out: Source = {};
  const strings = (field: "principals" | "notPrincipals" | "namespaces" | "notNamespaces") => {
    const values = stringList(s[field], `from[${i}].source.${field}`);
    if (values) out[field] = values.map((v) => stringMatch(v, `from[${i}].source.${field}`));
  };
  strings("principals");
  strings("notPrincipals");
  strings("namespaces");
  strings("notNamespaces");
  const blocks = (field: "ipBlocks" | "notIpBlocks" | "remoteIpBlocks" | "notRemoteIpBlocks") => {
    const values = stringList(s[field], `from[${i}].source.${field}`);
    if (values) out[field] = addressSet(values, `from[${i}].source.${field}`);
  };
  blocks("ipBlocks");
  blocks("notIpBlocks");
  blocks("remoteIpBlocks");
  blocks("notRemoteIpBlocks");
  return out;
}

function compileOperation(raw: unknown, i: number, l7: string[]): Operation {
  const o = object(raw, `to[${i}].operation`);
  for (const field of OPERATION_L7) if (o[field] !== undefined) l7.push(`to[${i}].operation.${field}`);
  const out: Operation = {};
  const ports = portList(o.ports, `to[${i}].operation.ports`);
  if (ports) out.ports = ports;
  const notPorts = portList(o.notPorts, `to[${i}].operation.notPorts`);
  if (notPorts) out.notPorts = notPorts;
  return out;
}

function compileCondition(raw: unknown, i: number, l7: string[]): Condition | undefined {
  const c = object(raw, `when[${i}]`);
  const key = c.key;
  if (typeof key !== "string" || key === "") throw new RuleError(`when[${i}].key must be a non-empty string`);
  if (!(L4_KEYS as readonly string[]).includes(key)) {
    l7.push(`when[${i}](${key.slice(0, 128)})`);
    return undefined;
  }
  const k = key as ConditionKey;
  const field = `when[${i}]`;
  const values = stringList(c.values, `${field}.values`);
  const notValues = stringList(c.notValues, `${field}.notValues`);
  if (!values && !notValues) throw new RuleError(`${field} (${key}) has neither values nor notValues`);
  const out: Condition = { key: k };
  if (values) out.values = conditionValues(k, values, `${field}.values`);
  if (notValues) out.notValues = conditionValues(k, notValues, `${field}.notValues`);
  return out;
}

function conditionValues(key: ConditionKey, values: string[], field: string): ConditionValues {
  if (key === "source.ip" || key === "remote.ip" || key === "destination.ip") return addressSet(values, field);
  if (key === "destination.port") return ports(values, field);
  return values.map((v) => stringMatch(v, field));
}

function object(v: unknown, field: string): Record<string, unknown> {
  if (v === undefined || v === null) return {};
  if (typeof v !== "object" || Array.isArray(v)) throw new RuleError(`${field} must be an object`);
  return v as Record<string, unknown>;
}

function list(v: unknown, field: string): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new RuleError(`${field} must be a list`);
  if (v.length > MAX_LIST) throw new RuleError(`${field} has ${v.length} entries (at most ${MAX_LIST})`);
  return v;
}

/** A list of strings; undefined when absent or empty (Istio treats an empty list as an absent field). */
function stringList(v: unknown, field: string): string[] | undefined {
  const items = list(v, field);
  if (items.length === 0) return undefined;
  for (const item of items) {
    if (typeof item !== "string" || item.length > MAX_VALUE) {
      throw new RuleError(`${field} must hold strings of at most ${MAX_VALUE} characters`);
    }
  }
  return items as string[];
}

function stringMatch(v: string, field: string): StringMatch {
  if (v === "*") return { kind: "present", value: "" };
  const inner = v.slice(1, -1);
  if (inner.includes("*")) throw new RuleError(`${field}: ${JSON.stringify(v)} has a * that is not first or last`);
  if (v.endsWith("*")) return { kind: "prefix", value: v.slice(0, -1) };
  if (v.startsWith("*")) return { kind: "suffix", value: v.slice(1) };
  return { kind: "exact", value: v };
}

function addressSet(values: string[], field: string): AddressSet {
  try {
    return new AddressSet(values);
  } catch (err) {
    throw new RuleError(`${field}: ${(err as Error).message}`);
  }
}

/** Ports are strings in Istio's schema ("8080"); numbers are taken too, as YAML writes them unquoted. */
function portList(v: unknown, field: string): ReadonlySet<number> | undefined {
  const items = list(v, field);
  if (items.length === 0) return undefined;
  return ports(
    items.map((p) => (typeof p === "number" ? String(p) : p)),
    field,
  );
}

function ports(values: unknown[], field: string): ReadonlySet<number> {
  const out = new Set<number>();
  for (const p of values) {
    const n = typeof p === "string" && /^[1-9][0-9]{0,4}$/.test(p) ? Number(p) : 0;
    if (n < 1 || n > 65535) throw new RuleError(`${field}: ${JSON.stringify(p)} is not a port (1-65535)`);
    out.add(n);
  }
  return out;
}

function matchesString(m: StringMatch, value: string): boolean {
  if (value === "") return false;
  switch (m.kind) {
    case "present":
      return true;
    case "prefix":
      return value.startsWith(m.value);
    case "suffix":
      return value.endsWith(m.value);
    case "exact":
      return value === m.value;
  }
}

function anyString(list: readonly StringMatch[], value: string): boolean {
  for (const m of list) if (matchesString(m, value)) return true;
  return false;
}

function sourceMatches(s: Source, c: ConnectionAttributes): boolean {
  if (s.principals && !anyString(s.principals, c.principal)) return false;
  if (s.notPrincipals && anyString(s.notPrincipals, c.principal)) return false;
  if (s.namespaces && !anyString(s.namespaces, c.namespace)) return false;
  if (s.notNamespaces && anyString(s.notNamespaces, c.namespace)) return false;
  if (s.ipBlocks && !s.ipBlocks.has(c.sourceIp)) return false;
  if (s.notIpBlocks?.has(c.sourceIp)) return false;
  if (s.remoteIpBlocks && !s.remoteIpBlocks.has(c.sourceIp)) return false;
  if (s.notRemoteIpBlocks?.has(c.sourceIp)) return false;
  return true;
}

function operationMatches(o: Operation, c: ConnectionAttributes): boolean {
  if (o.ports && !o.ports.has(c.destinationPort)) return false;
  if (o.notPorts?.has(c.destinationPort)) return false;
  return true;
}

function conditionHolds(cond: Condition, c: ConnectionAttributes): boolean {
  if (cond.values && !valueIn(cond.key, cond.values, c)) return false;
  if (cond.notValues && valueIn(cond.key, cond.notValues, c)) return false;
  return true;
}

function valueIn(key: ConditionKey, values: ConditionValues, c: ConnectionAttributes): boolean {
  switch (key) {
    case "source.ip":
    case "remote.ip":
      return (values as AddressSet).has(c.sourceIp);
    case "destination.ip":
      return (values as AddressSet).has(c.destinationIp);
    case "destination.port":
      return (values as ReadonlySet<number>).has(c.destinationPort);
    case "source.principal":
      return anyString(values as readonly StringMatch[], c.principal);
    case "source.namespace":
      return anyString(values as readonly StringMatch[], c.namespace);
  }
}

/**
 * Whether the rule's L4 part matches the connection (an L7 field is left to the caller's action-specific reading;
 * a broken rule is the caller's to judge too).
 */
export function ruleMatches(rule: CompiledRule, c: ConnectionAttributes): boolean {
  if (rule.from && !rule.from.some((s) => sourceMatches(s, c))) return false;
  if (rule.to && !rule.to.some((o) => operationMatches(o, c))) return false;
  for (const cond of rule.when) if (!conditionHolds(cond, c)) return false;
  return true;
}
