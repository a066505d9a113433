import type { EventEmitter } from "node:events";
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import test from "ava";
import type { AmbitError } from "../../../agent/errors.js";
import { MESH_LABEL, type PodSpec } from "../../../agent/kube/pod.js";
import { PodFileReadError, PodFileSource } from "../../../agent/kube/pod-file-source.js";
import { writePodFileAtomic } from "../../../agent/kube/pod-file-write.js";
import type { PodProblem } from "../../../agent/kube/pod-validation.js";

const pod = (name: string, labels: Record<string, string> = {}): PodSpec => ({
  name,
  namespace: "shop",
  serviceAccount: "web",
  nodeName: "node-a",
  labels,
  netns: `/var/run/netns/${name}`,
  ips: ["10.0.0.2"],
});

/** Resolves with the next `event` from `emitter`, or rejects after `ms`. */
function next<T>(emitter: EventEmitter, event: string, ms = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`no "${event}" event within ${ms} ms`));
    }, ms);
    const on = (value: T) => {
      clearTimeout(timer);
      resolve(value);
    };
    emitter.once(event, on);
  });
}

async function setup(t: { teardown: (fn: () => Promise<void> | void) => void }) {
  const dir = await mkdtemp(join(tmpdir(), "ambit-podfile-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return join(dir, "pods.json");
}

test("start reads the file; an atomic rename with new labels emits change", async (t) => {
  const path = await setup(t);
  await writePodFileAtomic(path, { namespaces: [{ name: "shop", labels: {} }], pods: [pod("a")] });
  const source = new PodFileSource({ path, debounceMs: 20 });
  t.teardown(() => source.close());
  const initial = await source.start();
  t.deepEqual(initial.pods[0]?.labels, {});

  const changed = next<{ pods: PodSpec[] }>(source, "change");
  await writePodFileAtomic(path, {
    namespaces: [{ name: "shop", labels: {} }],
    pods: [pod("a", { [MESH_LABEL]: "enabled" })],
  });
  const state = await changed;
  t.deepEqual(state.pods[0]?.labels, { [MESH_LABEL]: "enabled" });
  t.deepEqual(source.current(), state);

  // A second rename after the first one is still seen (the watch is on the directory, not the replaced inode).
  const again = next<{ pods: PodSpec[] }>(source, "change");
  await writePodFileAtomic(path, { pods: [pod("a"), pod("b")] });
  t.deepEqual(
    (await again).pods.map((p) => p.name),
    ["a", "b"],
  );
});

test("garbage emits error and keeps the last good state; a later good file recovers", async (t) => {
  const path = await setup(t);
  await writePodFileAtomic(path, { pods: [pod("a")] });
  const source = new PodFileSource({ path, debounceMs: 20 });
  t.teardown(() => source.close());
  const good = await source.start();

  const failed = next<AmbitError>(source, "error");
  await writePodFileAtomic(path, "{ this is not json");
  const err = await failed;
  t.is(err.code, "POD_FILE_INVALID");
  t.deepEqual(source.current(), good);

  const shape = next<AmbitError>(source, "error");
  await writePodFileAtomic(path, { pods: "nope" });
  t.is((await shape).code, "POD_FILE_INVALID");
  t.deepEqual(source.current(), good);

  const recovered = next<{ pods: PodSpec[] }>(source, "change");
  await writePodFileAtomic(path, { pods: [pod("a"), pod("c")] });
  t.is((await recovered).pods.length, 2);
});

test("a bad pod emits invalid with its problem and change with the others", async (t) => {
  const path = await setup(t);
  await writePodFileAtomic(path, { pods: [pod("a")] });
  const source = new PodFileSource({ path, debounceMs: 20 });
  t.teardown(() => source.close());
  await source.start();

  const invalid = next<PodProblem[]>(source, "invalid");
  const changed = next<{ pods: PodSpec[] }>(source, "change");
  await writePodFileAtomic(path, { pods: [pod("a"), { ...pod("b"), ips: [] }, pod("c")] });
  const problems = await invalid;
  t.is(problems.length, 1);
  t.regex(problems[0]?.message ?? "", /pod shop\/b: has no IPs/);
  t.deepEqual(
    (await changed).pods.map((p) => p.name),
    ["a", "c"],
  );
});

test("in-place rewrites are seen too, and identical content emits nothing", async (t) => {
  const path = await setup(t);
  await writeFile(path, JSON.stringify({ pods: [pod("a")] }));
  const source = new PodFileSource({ path, debounceMs: 20 });
  t.teardown(() => source.close());
  await source.start();
  let changes = 0;
  source.on("change", () => changes++);

  const changed = next(source, "change");
  await writeFile(path, JSON.stringify({ pods: [pod("a"), pod("b")] }));
  await changed;
  await writePodFileAtomic(path, { pods: [pod("a"), pod("b")] });
  await source.reload();
  t.is(changes, 1);
});

test("start rejects with a typed error when there is no usable file", async (t) => {
  const path = await setup(t);
  const missing = new PodFileSource({ path });
  await t.throwsAsync(() => missing.start(), { instanceOf: PodFileReadError, code: "POD_FILE_UNREADABLE" });
  missing.close();
  await writeFile(path, "[]");
  const bad = new PodFileSource({ path });
  await t.throwsAsync(() => bad.start(), { code: "POD_FILE_INVALID" });
  bad.close();
});

test("without an error listener a malformed file is logged, not thrown", async (t) => {
  const path = await setup(t);
  await writePodFileAtomic(path, { pods: [pod("a")] });
  const source = new PodFileSource({ path, debounceMs: 10 });
  t.teardown(() => source.close());
  const good = await source.start();
  await writePodFileAtomic(path, "garbage");
  await source.reload();
  t.deepEqual(source.current(), good);
});

test("ConfigMap-style updates (a symlinked ..data directory swapped by rename) are seen", async (t) => {
  const path = await setup(t);
  const dir = dirname(path);
  const publish = async (version: number, pods: PodSpec[]) => {
    const real = join(dir, `..v${version}`);
    await mkdir(real);
    await writeFile(join(real, "pods.json"), JSON.stringify({ pods }));
    await symlink(`..v${version}`, join(dir, "..data_tmp"));
    await rename(join(dir, "..data_tmp"), join(dir, "..data"));
  };
  await publish(1, [pod("a")]);
  await symlink("..data/pods.json", path);
  const source = new PodFileSource({ path, debounceMs: 20, pollIntervalMs: 0 });
  t.teardown(() => source.close());
  t.is((await source.start()).pods.length, 1);
  const changed = next<{ pods: PodSpec[] }>(source, "change");
  await publish(2, [pod("a"), pod("b")]);
  t.deepEqual(
    (await changed).pods.map((p) => p.name),
    ["a", "b"],
  );
});
