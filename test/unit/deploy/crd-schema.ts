// The OpenAPI v3 schema of a CustomResourceDefinition version, checked two ways:
// - structuralProblems: what the API server refuses in an apiextensions.k8s.io/v1 CRD (a non-structural schema),
//   limited to the keywords listed in KEYWORDS; a schema using another keyword fails until this file learns it;
// - objectProblems: what the API server does to a custom object under that schema: refuses wrong types, enum values
//   and sizes, and prunes (drops silently) fields the schema does not name unless x-kubernetes-preserve-unknown-fields
//   keeps them. CEL rules (x-kubernetes-validations) are not evaluated, and are not among the keywords.

export interface JsonSchema {
  type?: string;
  description?: string;
  properties?: Record<string, JsonSchema>;
  additionalProperties?: JsonSchema;
  items?: JsonSchema;
  enum?: unknown[];
  required?: string[];
  maxLength?: number;
  minProperties?: number;
  maxProperties?: number;
  maxItems?: number;
  "x-kubernetes-preserve-unknown-fields"?: boolean;
}

const KEYWORDS = new Set([
  "type",
  "description",
  "properties",
  "additionalProperties",
  "items",
  "enum",
  "required",
  "maxLength",
  "minProperties",
  "maxProperties",
  "maxItems",
  "x-kubernetes-preserve-unknown-fields",
]);
const TYPES = new Set(["object", "array", "string", "integer", "number", "boolean"]);

/** Why `schema` is not a structural schema the API server accepts; empty when it is. */
export function structuralProblems(schema: JsonSchema, path = ""): string[] {
  const at = path || "/";
  const problems = Object.keys(schema)
    .filter((k) => !KEYWORDS.has(k))
    .map((k) => `${at}: keyword ${k} is not handled by crd-schema.ts`);
  const preserve = schema["x-kubernetes-preserve-unknown-fields"] === true;
  if (schema.type === undefined) {
    if (!preserve) problems.push(`${at}: no type (required unless x-kubernetes-preserve-unknown-fields)`);
  } else if (!TYPES.has(schema.type)) {
    problems.push(`${at}: unknown type ${schema.type}`);
  }
  if (path === "" && schema.type !== "object") problems.push("/: the root must be of type object");
  if ((schema.properties || schema.additionalProperties) && schema.type !== "object") {
    problems.push(`${at}: properties and additionalProperties need type object`);
  }
  if (schema.properties && schema.additionalProperties) {
    problems.push(`${at}: properties and additionalProperties are mutually exclusive`);
  }
  if ((schema.type === "array") !== (schema.items !== undefined)) problems.push(`${at}: items goes with type array`);
  for (const value of schema.enum ?? []) {
    if (!hasType(value, schema.type)) problems.push(`${at}: enum value ${JSON.stringify(value)} is not ${schema.type}`);
  }
  for (const name of schema.required ?? []) {
    if (!schema.properties?.[name]) problems.push(`${at}: required ${name} is not a property`);
  }
  for (const [name, sub] of Object.entries(schema.properties ?? {})) {
    problems.push(...structuralProblems(sub, `${path}/${name}`));
  }
  if (schema.additionalProperties) problems.push(...structuralProblems(schema.additionalProperties, `${path}/*`));
  if (schema.items) problems.push(...structuralProblems(schema.items, `${path}/[]`));
  return problems;
}

export interface ObjectProblems {
  /** The API server would refuse the object for these. */
  invalid: string[];
  /** The API server would drop these fields silently. */
  pruned: string[];
}

/** What the API server would refuse or prune in `value` under the structural schema `schema`. */
export function objectProblems(schema: JsonSchema, value: unknown): ObjectProblems {
  const result: ObjectProblems = { invalid: [], pruned: [] };
  walk(schema, value, "", result);
  return result;
}

function walk(schema: JsonSchema, value: unknown, path: string, out: ObjectProblems): void {
  const at = path || "/";
  if (schema.type !== undefined && !hasType(value, schema.type)) {
    out.invalid.push(`${at}: must be ${schema.type}, got ${JSON.stringify(value)}`);
    return;
  }
  if (schema.enum && !schema.enum.includes(value)) {
    out.invalid.push(`${at}: ${JSON.stringify(value)} is not one of ${schema.enum.join(", ")}`);
  }
  if (typeof value === "string" && schema.maxLength !== undefined && value.length > schema.maxLength) {
    out.invalid.push(`${at}: longer than ${schema.maxLength}`);
  }
  if (Array.isArray(value)) {
    if (schema.maxItems !== undefined && value.length > schema.maxItems) {
      out.invalid.push(`${at}: more than ${schema.maxItems} items`);
    }
    if (schema.items) for (const [i, item] of value.entries()) walk(schema.items, item, `${path}/${i}`, out);
    return;
  }
  if (typeof value !== "object" || value === null) return;
  const entries = Object.entries(value);
  if (schema.minProperties !== undefined && entries.length < schema.minProperties) {
    out.invalid.push(`${at}: fewer than ${schema.minProperties} properties`);
  }
  if (schema.maxProperties !== undefined && entries.length > schema.maxProperties) {
    out.invalid.push(`${at}: more than ${schema.maxProperties} properties`);
  }
  for (const name of schema.required ?? []) {
    if (!(name in value)) out.invalid.push(`${at}: ${name} is required`);
  }
  for (const [key, item] of entries) {
    const sub = schema.properties?.[key] ?? schema.additionalProperties;
    if (sub) walk(sub, item, `${path}/${key}`, out);
    else if (schema["x-kubernetes-preserve-unknown-fields"] !== true) out.pruned.push(`${path}/${key}`);
  }
}

function hasType(value: unknown, type: string | undefined): boolean {
  switch (type) {
    case undefined:
      return true;
    case "object":
      return typeof value === "object" && value !== null && !Array.isArray(value);
    case "array":
      return Array.isArray(value);
    case "integer":
      return Number.isInteger(value);
    case "number":
      return typeof value === "number";
    default:
      return typeof value === type;
  }
}
