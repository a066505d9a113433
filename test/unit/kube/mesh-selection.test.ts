import test from "ava";
import { isMeshEnrolled, MESH_LABEL } from "../../../agent/kube/mesh-selection.js";

const on = { [MESH_LABEL]: "enabled" };
const off = { [MESH_LABEL]: "disabled" };

test("pod label enabled opts in", (t) => {
  t.true(isMeshEnrolled({ labels: on }));
  t.true(isMeshEnrolled({ labels: on }, { labels: {} }));
});

test("namespace label enabled opts its pods in", (t) => {
  t.true(isMeshEnrolled({ labels: {} }, { labels: on }));
  t.true(isMeshEnrolled({ labels: { app: "web" } }, { labels: on }));
});

test("pod opt-out wins over the namespace", (t) => {
  t.false(isMeshEnrolled({ labels: off }, { labels: on }));
  t.false(isMeshEnrolled({ labels: off }));
});

test("pod opt-in wins over a disabled namespace", (t) => {
  t.true(isMeshEnrolled({ labels: on }, { labels: off }));
});

test("absent or unknown label means not enrolled", (t) => {
  t.false(isMeshEnrolled({ labels: {} }));
  t.false(isMeshEnrolled({ labels: {} }, { labels: {} }));
  t.false(isMeshEnrolled({ labels: {} }, { labels: off }));
  t.false(isMeshEnrolled({ labels: { [MESH_LABEL]: "true" } }));
  t.false(isMeshEnrolled({ labels: {} }, { labels: { [MESH_LABEL]: "yes" } }));
});
