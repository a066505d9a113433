import test from "ava";
import { type JsonSchema, objectProblems, structuralProblems } from "./crd-schema.js";

const schema: JsonSchema = {
  type: "object",
  required: ["spec"],
  properties: {
    spec: {
      type: "object",
      properties: {
        mode: { type: "string", enum: ["A", "B"] },
        labels: { type: "object", maxProperties: 2, additionalProperties: { type: "string", maxLength: 3 } },
        ports: { type: "object", minProperties: 1, additionalProperties: { type: "integer" } },
        list: { type: "array", maxItems: 2, items: { type: "object", "x-kubernetes-preserve-unknown-fields": true } },
        open: { type: "object", "x-kubernetes-preserve-unknown-fields": true, properties: { n: { type: "number" } } },
      },
    },
  },
};

test("a schema built from the handled keywords is structural", (t) => {
  t.deepEqual(structuralProblems(schema), []);
  t.deepEqual(structuralProblems({ "x-kubernetes-preserve-unknown-fields": true, type: "object" }), []);
});

test("what the API server refuses in a CRD schema is reported, and keywords not handled here too", (t) => {
  t.deepEqual(structuralProblems({ type: "object", properties: { a: {} } }), [
    "/a: no type (required unless x-kubernetes-preserve-unknown-fields)",
  ]);
  t.deepEqual(structuralProblems({ type: "array" }), [
    "/: the root must be of type object",
    "/: items goes with type array",
  ]);
  t.deepEqual(structuralProblems({ type: "object", properties: { a: { type: "string", properties: {} } } }), [
    "/a: properties and additionalProperties need type object",
  ]);
  t.deepEqual(
    structuralProblems({
      type: "object",
      properties: { a: { type: "object" } },
      additionalProperties: { type: "string" },
    }),
    ["/: properties and additionalProperties are mutually exclusive"],
  );
  t.deepEqual(structuralProblems({ type: "object", properties: { m: { type: "string", enum: ["A", 1] } } }), [
    "/m: enum value 1 is not string",
  ]);
  t.deepEqual(structuralProblems({ type: "object", required: ["x"] }), ["/: required x is not a property"]);
  t.deepEqual(structuralProblems({ type: "object", pattern: "^a$" } as JsonSchema), [
    "/: keyword pattern is not handled by crd-schema.ts",
  ]);
  t.deepEqual(structuralProblems({ type: "strin" } as JsonSchema), [
    "/: unknown type strin",
    "/: the root must be of type object",
  ]);
});

test("an object that fits the schema has nothing refused or pruned", (t) => {
  const value = {
    spec: {
      mode: "A",
      labels: { a: "xyz" },
      ports: { "80": 1 },
      list: [{ anything: { at: ["all"] } }],
      open: { n: 1.5, kept: true },
    },
  };
  t.deepEqual(objectProblems(schema, value), { invalid: [], pruned: [] });
});

test("types, enums, sizes and required fields are refused; unknown fields pruned unless preserved", (t) => {
  t.deepEqual(objectProblems(schema, {}), { invalid: ["/: spec is required"], pruned: [] });
  t.deepEqual(
    objectProblems(schema, {
      spec: {
        mode: "C",
        labels: { a: "long", b: "x", c: "y" },
        ports: {},
        list: [1, {}, {}],
        open: { n: "1" },
        extra: 1,
      },
      top: {},
    }),
    {
      invalid: [
        '/spec/mode: "C" is not one of A, B',
        "/spec/labels: more than 2 properties",
        "/spec/labels/a: longer than 3",
        "/spec/ports: fewer than 1 properties",
        "/spec/list: more than 2 items",
        "/spec/list/0: must be object, got 1",
        '/spec/open/n: must be number, got "1"',
      ],
      pruned: ["/spec/extra", "/top"],
    },
  );
  t.deepEqual(objectProblems(schema, { spec: { ports: { "80": 1.5 } } }).invalid, [
    "/spec/ports/80: must be integer, got 1.5",
  ]);
});
