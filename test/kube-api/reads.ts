import type { ServerResponse } from "node:http";
import { selection, sendStatus, sendText } from "./http-io.js";
import { listPage } from "./list-page.js";
import { groupVersion, listKind, type ResourceDef } from "./resources.js";
import * as st from "./status.js";
import { type ObjectStore, objectJson } from "./store.js";

/** GET of a collection (list) and of one object, as the real server answers them. */

export function handleList(
  store: ObjectStore,
  res: ServerResponse,
  def: ResourceDef,
  version: string,
  namespace: string | undefined,
  q: URLSearchParams,
) {
  const sel = selection(def, namespace, q);
  if ("kind" in sel) return sendStatus(res, sel);
  const rawLimit = q.get("limit");
  if (rawLimit !== null && !/^-?\d{1,15}$/.test(rawLimit)) {
    return sendStatus(res, st.badRequest(`invalid limit "${rawLimit}"`));
  }
  const page = listPage(store, def.plural, {
    namespace,
    labelSelector: sel.labels,
    fieldSelector: sel.fields,
    limit: rawLimit === null ? undefined : Number(rawLimit),
    continueToken: q.get("continue") ?? undefined,
    resourceVersion: q.get("resourceVersion") ?? undefined,
    resourceVersionMatch: q.get("resourceVersionMatch") ?? undefined,
  });
  if (!page.ok) return sendStatus(res, page.status);
  const apiVersion = groupVersion(def.group, version);
  const metadata: Record<string, unknown> = { resourceVersion: String(page.rv) };
  if (page.continueToken) metadata.continue = page.continueToken;
  if (page.remainingItemCount !== undefined) metadata.remainingItemCount = page.remainingItemCount;
  // Built-in list items carry no kind/apiVersion (the real serializer drops them); custom resources' items do.
  const items = page.items.map((o) => (def.custom ? objectJson(o, def.kind, apiVersion) : o.json));
  const head = `{"kind":${JSON.stringify(listKind(def))},"apiVersion":${JSON.stringify(apiVersion)}`;
  sendText(res, 200, `${head},"metadata":${JSON.stringify(metadata)},"items":[${items.join(",")}]}`);
}

export function handleGet(
  store: ObjectStore,
  res: ServerResponse,
  def: ResourceDef,
  version: string,
  namespace: string | undefined,
  name: string,
) {
  const o = store.get(def.plural, namespace ?? "", name);
  if (!o) return sendStatus(res, st.notFound(def.group, def.plural, name));
  sendText(res, 200, objectJson(o, def.kind, groupVersion(def.group, version)));
}
