import type { IncomingMessage, ServerResponse } from "node:http";
import { readJson, sendStatus, sendText, type Verb } from "./http-io.js";
import { mergePatch } from "./merge-patch.js";
import { groupVersion, type KubeObject, type ResourceDef } from "./resources.js";
import * as st from "./status.js";
import { type ObjectStore, objectJson, type StoredObject, StoreError } from "./store.js";

/** create (POST), update (PUT), merge patch (PATCH) and delete (DELETE) over HTTP, with the real server's answers. */

const PATCH_TYPES = new Set(["application/merge-patch+json", "application/strategic-merge-patch+json"]);

export function storeFailure(def: ResourceDef, name: string, err: unknown): st.Status {
  if (!(err instanceof StoreError)) throw err;
  switch (err.code) {
    case "not_found":
      return st.notFound(def.group, def.plural, name);
    case "already_exists":
      return st.alreadyExists(def.group, def.plural, name);
    case "conflict":
      return st.conflict(def.group, def.plural, name, err.message);
    case "expired":
      return st.expired(err.message);
    case "invalid":
      return st.invalid(def.kind, name, err.message);
  }
}

function bodyProblem(
  obj: KubeObject,
  def: ResourceDef,
  apiVersion: string,
  namespace: string | undefined,
  name: string | undefined,
): st.Status | undefined {
  if (typeof obj !== "object" || obj === null || typeof obj.metadata !== "object" || obj.metadata === null) {
    return st.badRequest("the body of the request is not an object with metadata");
  }
  if (obj.kind !== undefined && obj.kind !== def.kind)
    return st.badRequest(`kind ${obj.kind} does not match ${def.kind}`);
  if (obj.apiVersion !== undefined && obj.apiVersion !== apiVersion) {
    return st.badRequest(`apiVersion ${obj.apiVersion} does not match ${apiVersion}`);
  }
  const m = obj.metadata;
  if (namespace !== undefined && m.namespace !== undefined && m.namespace !== namespace) {
    return st.badRequest("the namespace of the provided object does not match the namespace sent on the request");
  }
  if (name !== undefined && m.name !== name) {
    return st.badRequest(`the name of the object (${m.name}) does not match the name on the URL (${name})`);
  }
  return undefined;
}

export async function handleWrite(
  store: ObjectStore,
  req: IncomingMessage,
  res: ServerResponse,
  verb: Exclude<Verb, "list" | "watch" | "get">,
  def: ResourceDef,
  version: string,
  namespace: string | undefined,
  name: string | undefined,
): Promise<void> {
  const apiVersion = groupVersion(def.group, version);
  const ns = namespace ?? "";
  // A strategic merge differs from a merge patch only inside lists; for the maps tests patch (labels) they agree.
  if (verb === "patch" && !PATCH_TYPES.has((req.headers["content-type"] ?? "").split(";")[0]?.trim() ?? "")) {
    req.resume();
    const msg = `the body of the request was in an unknown format - accepted media types include: ${[...PATCH_TYPES].join(", ")}`;
    return sendStatus(res, st.failure(415, "UnsupportedMediaType", msg));
  }
  if (verb === "delete") req.resume();
  const body = verb === "delete" ? {} : await readJson(req, res);
  if (body === undefined) return;
  const objName = name ?? (body as KubeObject)?.metadata?.name ?? "";
  try {
    let stored: StoredObject;
    if (verb === "delete") {
      stored = store.delete(def.plural, ns, objName);
    } else {
      let obj = body as KubeObject;
      if (verb === "patch") {
        const current = store.get(def.plural, ns, objName);
        if (!current) return sendStatus(res, st.notFound(def.group, def.plural, objName));
        obj = mergePatch(JSON.parse(current.json), body) as KubeObject;
      }
      const problem = bodyProblem(obj, def, apiVersion, namespace, name);
      if (problem) return sendStatus(res, problem);
      const given = { ...obj, metadata: { ...obj.metadata, ...(namespace !== undefined ? { namespace } : {}) } };
      stored = verb === "create" ? store.create(def.plural, given) : store.replace(def.plural, given);
    }
    sendText(res, verb === "create" ? 201 : 200, objectJson(stored, def.kind, apiVersion));
  } catch (err) {
    sendStatus(res, storeFailure(def, objName, err));
  }
}
