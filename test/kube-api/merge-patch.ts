/**
 * JSON merge patch (RFC 7386), what `PATCH` with `application/merge-patch+json` applies: objects merge key by
 * key, `null` removes a key, anything else (arrays included) replaces. Pure; neither input is modified.
 */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== "object" || patch === null || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> =
    typeof target === "object" && target !== null && !Array.isArray(target) ? { ...(target as object) } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}
