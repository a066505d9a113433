/**
 * Putting ambit-cni into the node's CNI configuration and taking it out again, as the DaemonSet's init container
 * will (install) and its uninstall hook (remove). Pure: text in, text out; the caller picks the file (the first
 * *.conflist or *.conf in /etc/cni/net.d by name, the one the runtime uses) and writes it atomically.
 *
 * Idempotent both ways: installing twice leaves one entry (the newer settings), and an entry is recognised by its
 * `type`, whatever else was edited. ambit-cni goes last in the chain: it needs the IPs the plugins before it
 * assigned (prevResult), and the pod's interfaces must exist when its rules go in.
 */

import { AmbitError } from "../errors.js";

export const PLUGIN_TYPE = "ambit-cni";

export class ConflistError extends AmbitError {}

type Json = Record<string, unknown>;

/** `text` (a .conflist, or a single-plugin .conf, which becomes a list) with ambit-cni's entry last. */
export function installPlugin(text: string, entry: Json): string {
  const list = asList(parse(text));
  const plugins = (list.plugins as Json[]).filter((p) => p.type !== PLUGIN_TYPE);
  plugins.push({ ...entry, type: PLUGIN_TYPE });
  return `${JSON.stringify({ ...list, plugins }, null, 2)}\n`;
}

/** `text` without ambit-cni's entry; unchanged (byte for byte) when it had none. */
export function removePlugin(text: string): string {
  const config = parse(text);
  if (!Array.isArray(config.plugins)) return text;
  const plugins = (config.plugins as Json[]).filter((p) => p?.type !== PLUGIN_TYPE);
  if (plugins.length === config.plugins.length) return text;
  return `${JSON.stringify({ ...config, plugins }, null, 2)}\n`;
}

/** Whether `text` has an ambit-cni entry in its plugin list. */
export function hasPlugin(text: string): boolean {
  const config = parse(text);
  return Array.isArray(config.plugins) && config.plugins.some((p) => (p as Json | null)?.type === PLUGIN_TYPE);
}

function parse(text: string): Json {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new ConflistError("conflist_invalid", "the CNI configuration is not JSON", { cause: err });
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ConflistError("conflist_invalid", "the CNI configuration is not a JSON object");
  }
  return v as Json;
}

function asList(config: Json): Json {
  if (Array.isArray(config.plugins)) {
    if (!config.plugins.every((p) => typeof p === "object" && p !== null && !Array.isArray(p))) {
      throw new ConflistError("conflist_invalid", "a plugin of the list is not an object");
    }
    return config;
  }
  if (typeof config.type !== "string") {
    throw new ConflistError("conflist_invalid", "neither a plugin list nor a plugin (no plugins, no type)");
  }
  // A .conf: its network-level fields move to the list, the rest stays the plugin's.
  const { cniVersion, name, ...plugin } = config;
  return { cniVersion, name, plugins: [plugin] };
}
