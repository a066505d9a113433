import type { IncomingMessage, ServerResponse } from "node:http";
import { BodyTooLargeError, readBody } from "../../agent/identity/https-json.js";
import type { ResourceDef } from "./resources.js";
import { selectableFields } from "./resources.js";
import {
  type FieldRequirement,
  type LabelRequirement,
  matchesFields,
  matchesLabels,
  parseFieldSelector,
  parseLabelSelector,
  SelectorError,
} from "./selectors.js";
import * as st from "./status.js";
import type { StoredObject } from "./store.js";

/** The test API server's HTTP plumbing: answers, request bodies, query parameters, selections. */

/** A request verb as the real server names them (a GET of a collection is a list, with ?watch a watch). */
export type Verb = "list" | "watch" | "get" | "create" | "update" | "patch" | "delete";

const MAX_BODY_BYTES = 3 * 1024 * 1024; // the real server's request body limit

export function sendText(
  res: ServerResponse,
  code: number,
  text: string,
  headers: Record<string, string | number> = {},
): void {
  res.writeHead(code, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-cache, private",
    ...headers,
  });
  res.end(text);
}

export function sendStatus(
  res: ServerResponse,
  status: st.Status,
  headers: Record<string, string | number> = {},
): void {
  sendText(res, status.code, JSON.stringify(status), headers);
}

/** The request body as JSON; on failure the answer (413 or 400) is sent and undefined returned. */
export async function readJson(req: IncomingMessage, res: ServerResponse): Promise<unknown> {
  let text: string;
  try {
    text = await readBody(req, MAX_BODY_BYTES);
  } catch (err) {
    if (!(err instanceof BodyTooLargeError)) throw err;
    sendStatus(res, st.failure(413, "RequestEntityTooLarge", `Request entity too large: limit is ${MAX_BODY_BYTES}`));
    return undefined;
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    sendStatus(res, st.badRequest("the body of the request was in an unknown format"));
    return undefined;
  }
}

/** Go's strconv.ParseBool, which the real server uses for boolean query parameters. */
export function parseBool(raw: string | null): boolean | undefined | "invalid" {
  if (raw === null) return undefined;
  if (["1", "t", "T", "TRUE", "true", "True"].includes(raw)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(raw)) return false;
  return "invalid";
}

/** What a list or watch selects: a namespace (from the path) and the parsed selectors. */
export interface Selection {
  namespace: string | undefined;
  labels: LabelRequirement[];
  fields: FieldRequirement[];
}

export function selection(def: ResourceDef, namespace: string | undefined, q: URLSearchParams): Selection | st.Status {
  try {
    return {
      namespace,
      labels: parseLabelSelector(q.get("labelSelector") ?? ""),
      fields: parseFieldSelector(q.get("fieldSelector") ?? "", new Set(Object.keys(selectableFields(def)))),
    };
  } catch (err) {
    if (err instanceof SelectorError) return st.badRequest(err.message);
    throw err;
  }
}

export function matcher(sel: Selection): (o: StoredObject) => boolean {
  return (o) =>
    (sel.namespace === undefined || o.namespace === sel.namespace) &&
    matchesLabels(sel.labels, o.labels) &&
    matchesFields(sel.fields, o.fields);
}
