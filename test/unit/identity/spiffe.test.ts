import test from "ava";
import { IdentityError } from "../../../agent/identity/errors.js";
import { formatSpiffeId, identityOfPod, parseSpiffeId } from "../../../agent/identity/spiffe.js";
import { podRecord } from "../../support/records.js";

test("format and parse round-trip", (t) => {
  const id = { trustDomain: "cluster.local", namespace: "shop", serviceAccount: "cart-v2" };
  const uri = formatSpiffeId(id);
  t.is(uri, "spiffe://cluster.local/ns/shop/sa/cart-v2");
  t.deepEqual(parseSpiffeId(uri), id);
});

const malformed = [
  "",
  "https://cluster.local/ns/a/sa/b",
  "spiffe://cluster.local",
  "spiffe://cluster.local/",
  "spiffe://cluster.local/ns/a/sa",
  "spiffe://cluster.local/ns/a/sa/b/extra",
  "spiffe://cluster.local/ns//sa/b",
  "spiffe://cluster.local/sa/b/ns/a",
  "spiffe://Cluster.Local/ns/a/sa/b",
  "spiffe://cluster.local:443/ns/a/sa/b",
  "spiffe://user@cluster.local/ns/a/sa/b",
  "spiffe://cluster.local/ns/a/sa/b?x=1",
  "spiffe://cluster.local/ns/a/sa/b#f",
  "spiffe://cluster.local/ns/%61/sa/b",
  "spiffe://cluster.local/ns/../sa/b",
  "spiffe:///ns/a/sa/b",
];

for (const uri of malformed) {
  test(`parse refuses ${JSON.stringify(uri)} with bad_san`, (t) => {
    const err = t.throws(() => parseSpiffeId(uri), { instanceOf: IdentityError });
    t.is(err?.code, "bad_san");
  });
}

test("format refuses parts that would not round-trip", (t) => {
  t.is(
    t
      .throws(() => formatSpiffeId({ trustDomain: "td", namespace: "a/b", serviceAccount: "x" }))
      ?.message.includes("namespace"),
    true,
  );
  t.throws(() => formatSpiffeId({ trustDomain: "TD", namespace: "a", serviceAccount: "x" }), {
    instanceOf: IdentityError,
  });
});

test("identityOfPod uses the pod's namespace and service account, defaulting to 'default'", (t) => {
  const pod = podRecord({ name: "web-1", serviceAccount: "web" });
  t.deepEqual(identityOfPod(pod, "example.org"), {
    trustDomain: "example.org",
    namespace: "shop",
    serviceAccount: "web",
  });
  t.is(identityOfPod({ ...pod, serviceAccount: "" }, "cluster.local").serviceAccount, "default");
});
