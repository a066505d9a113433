import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test from "ava";
import { loadCaFromFiles, loadOrCreateCa } from "../../../agent/identity/ca-files.js";
import { IdentityError } from "../../../agent/identity/errors.js";
import { issue, newCa, sid, TD } from "./helpers.js";

const run = promisify(execFile);

test("issued certificate: only the SPIFFE URI SAN, both EKUs, key usage, CA:false, lifetime (Node's parser)", async (t) => {
  const ca = await newCa(7200);
  const before = Date.now();
  const w = await issue(ca, sid("shop", "cart"));
  const after = Date.now();
  const cert = new X509Certificate(w.chainPem);
  t.is(cert.subjectAltName, "URI:spiffe://cluster.local/ns/shop/sa/cart");
  t.deepEqual([...(cert.keyUsage ?? [])].sort(), ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]);
  t.false(cert.ca);
  t.falsy(cert.subject, "subject is empty");
  const notAfter = Date.parse(cert.validTo);
  const notBefore = Date.parse(cert.validFrom);
  const within = (v: number, lo: number, hi: number) => v >= Math.floor(lo / 1000) * 1000 && v <= hi;
  t.true(within(notAfter, before + 7200_000, after + 7200_000), "lives the configured 2 h");
  t.true(within(notBefore, before - 60_000, after - 60_000), "backdated by one minute");
  t.true(cert.checkIssued(new X509Certificate(ca.trustBundlePem())));
  t.true(cert.verify(new X509Certificate(ca.trustBundlePem()).publicKey));
  t.true(cert.checkPrivateKey((await import("node:crypto")).createPrivateKey(w.keys.privateKeyPem)));
  const serial = Buffer.from(cert.serialNumber, "hex");
  t.is(serial.length, 16);
  t.true((serial[0] as number) < 0x80);
});

test("issued certificate as openssl sees it", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "ambit-id-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const ca = await newCa(5);
  const w = await issue(ca, sid("default", "web"));
  await writeFile(join(dir, "leaf.pem"), w.chainPem);
  await writeFile(join(dir, "ca.pem"), w.bundlePem);
  const { stdout } = await run("openssl", ["x509", "-in", join(dir, "leaf.pem"), "-noout", "-text"]);
  t.regex(
    stdout,
    /X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/default\/sa\/web\s*\n/,
  );
  t.notRegex(stdout, /DNS:|IP Address:|email:/);
  t.regex(stdout, /X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment/);
  t.regex(stdout, /X509v3 Extended Key Usage:\s*\n\s+TLS Web Server Authentication, TLS Web Client Authentication/);
  t.regex(stdout, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
  t.regex(stdout, /Public-Key: \(2048 bit\)/);
  t.regex(stdout, /Signature Algorithm: sha256WithRSAEncryption/);
  const nb = Date.parse(/Not Before: (.+)/.exec(stdout)?.[1] ?? "");
  const na = Date.parse(/Not After : (.+)/.exec(stdout)?.[1] ?? "");
  t.is(na - nb, 10_000, "5 s lifetime + 5 s backdate (clamped to the lifetime)");
  const verify = await run("openssl", [
    "verify",
    "-purpose",
    "sslclient",
    "-CAfile",
    join(dir, "ca.pem"),
    join(dir, "leaf.pem"),
  ]);
  t.regex(verify.stdout, /: OK/);
});

test("local mode: the CA is generated once, saved 0600 and reused on restart", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "ambit-ca-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const first = await loadOrCreateCa(join(dir, "ca"), { trustDomain: TD });
  const second = await loadOrCreateCa(join(dir, "ca"), { trustDomain: TD });
  t.is(first.trustBundlePem(), second.trustBundlePem());
  t.is((await stat(join(dir, "ca", "ca.key"))).mode & 0o777, 0o600);
  // A certificate from the first process verifies against the bundle of the restarted one.
  const w = await issue(first, sid("a", "b"));
  t.true(new X509Certificate(w.chainPem).verify(new X509Certificate(second.trustBundlePem()).publicKey));
  const fromFiles = await loadCaFromFiles(
    { certFile: join(dir, "ca", "ca.crt"), keyFile: join(dir, "ca", "ca.key") },
    { trustDomain: TD },
  );
  t.is(fromFiles.trustBundlePem(), first.trustBundlePem());
});

test("CA files: missing, mismatched key, or half a CA directory are refused with ca_files", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "ambit-ca-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await loadOrCreateCa(join(dir, "a"), { trustDomain: TD });
  await loadOrCreateCa(join(dir, "b"), { trustDomain: TD });
  const missing = await t.throwsAsync(
    loadCaFromFiles({ certFile: join(dir, "x"), keyFile: join(dir, "y") }, { trustDomain: TD }),
  );
  t.is((missing as IdentityError).code, "ca_files");
  const mixed = await t.throwsAsync(
    loadCaFromFiles({ certFile: join(dir, "a", "ca.crt"), keyFile: join(dir, "b", "ca.key") }, { trustDomain: TD }),
  );
  t.regex(mixed?.message ?? "", /does not match/);
  await rm(join(dir, "a", "ca.key"));
  const half = await t.throwsAsync(loadOrCreateCa(join(dir, "a"), { trustDomain: TD }), { instanceOf: IdentityError });
  t.regex(half?.message ?? "", /holds ca\.crt but no ca\.key/);
  t.truthy(await readFile(join(dir, "a", "ca.crt"), "utf8"), "the existing root was not overwritten");
});

test("agents sharing a CA directory and starting at once all end up with the same root", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "ambit-ca-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const cas = await Promise.all(
    Array.from({ length: 4 }, () => loadOrCreateCa(join(dir, "shared"), { trustDomain: TD })),
  );
  const roots = new Set(cas.map((ca) => ca.trustBundlePem()));
  t.is(roots.size, 1);
  const onDisk = new X509Certificate(await readFile(join(dir, "shared", "ca.crt"), "utf8"));
  t.is(onDisk.fingerprint256, new X509Certificate([...roots][0] ?? "").fingerprint256);
});
