import test from "ava";
import {
  isQualifiedName,
  matchesFields,
  matchesLabels,
  parseFieldSelector,
  parseLabelSelector,
  SelectorError,
} from "../../kube-api/selectors.js";

const sel = (text: string, labels: Record<string, string>) => matchesLabels(parseLabelSelector(text), labels);

test("label selector: equality, inequality, sets, existence, as apimachinery matches them", (t) => {
  const web = { app: "web", tier: "front", "ambit.dev/mesh": "enabled" };
  const db = { app: "db" };
  t.true(sel("", web), "the empty selector selects everything");
  t.true(sel("app=web", web));
  t.true(sel("app==web", web));
  t.false(sel("app=web", db));
  t.true(sel("app!=web", db));
  t.true(sel("tier!=back", db), "!= also selects objects without the label");
  t.true(sel("app in (web, db)", db));
  t.false(sel("app in (cache)", db));
  t.true(sel("app notin (cache)", db));
  t.true(sel("tier notin (front)", db), "notin also selects objects without the label");
  t.false(sel("tier notin (front)", web));
  t.true(sel("tier", web));
  t.false(sel("tier", db));
  t.true(sel("!tier", db));
  t.false(sel("!tier", web));
  t.true(sel("ambit.dev/mesh=enabled,app=web", web), "requirements are ANDed; prefixed keys");
  t.false(sel("ambit.dev/mesh=enabled,app=db", web));
  t.true(sel(" app = web , tier ", web), "whitespace between tokens is ignored");
  t.true(sel("tier=", { tier: "" }), "an empty value is a value");
  t.false(sel("tier=", db));
  t.true(sel("app in ()", { app: "" }), "() is the set holding the empty value");
});

test("label selector: gt/lt compare integers and never match non-integers", (t) => {
  t.true(sel("gen>3", { gen: "4" }));
  t.false(sel("gen>3", { gen: "3" }));
  t.true(sel("gen<3", { gen: "-1" }));
  t.false(sel("gen<3", { gen: "x" }));
  t.false(sel("gen<3", {}));
});

test("label selector: malformed text and invalid keys/values are refused", (t) => {
  for (const bad of [
    "app=web,",
    "app in web",
    "app in (web",
    "app web",
    "=web",
    "!",
    "app=a b",
    "-app=x",
    `app=${"v".repeat(64)}`,
    "bad_prefix!/x=y",
    "gen>x",
    "app in (a b)",
  ]) {
    t.throws(() => parseLabelSelector(bad), { instanceOf: SelectorError }, bad);
  }
  t.throws(() => parseLabelSelector("a".repeat(20_000)), { instanceOf: SelectorError }, "length is bounded");
  t.true(isQualifiedName("kubernetes.io/metadata.name"));
  t.false(isQualifiedName("Kube.IO/x"), "the prefix is a lowercase DNS subdomain");
});

test("field selector: =, ==, != on supported labels, escapes, missing fields read as empty", (t) => {
  const supported = new Set(["metadata.name", "metadata.namespace", "spec.nodeName"]);
  const fields = { "metadata.name": "a,b", "metadata.namespace": "shop", "spec.nodeName": "" };
  const f = (text: string) => matchesFields(parseFieldSelector(text, supported), fields);
  t.true(f(""));
  t.true(f("metadata.namespace=shop"));
  t.true(f("metadata.namespace==shop"));
  t.false(f("metadata.namespace!=shop"));
  t.true(f("metadata.name=a\\,b"), "\\, is a literal comma");
  t.true(f("spec.nodeName="), "an unscheduled pod has spec.nodeName empty");
  t.true(f("metadata.namespace=shop,spec.nodeName!=node-a"));
  t.false(f("metadata.namespace=shop,spec.nodeName=node-a"));
  t.deepEqual(parseFieldSelector("spec.nodeName!=a\\=b", supported), [
    { field: "spec.nodeName", op: "!=", value: "a=b" },
  ]);
  t.throws(() => parseFieldSelector("spec.restartPolicy=Always", supported), { message: /field label not supported/ });
  t.throws(() => parseFieldSelector("metadata.name", supported), { instanceOf: SelectorError });
  t.throws(() => parseFieldSelector("metadata.name=a=b", supported), { instanceOf: SelectorError });
  t.throws(() => parseFieldSelector("metadata.name=a\\x", supported), { instanceOf: SelectorError });
});
