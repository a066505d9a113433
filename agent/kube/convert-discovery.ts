import {
  type Converted,
  describe,
  finish,
  ipFamily,
  isDnsLabel,
  isPort,
  isRecord,
  isSubdomain,
  type KindSpec,
  oneOf,
  optionalArray,
  optionalObject,
  optionalString,
  readHeader,
  readLabels,
} from "./convert-common.js";
import type { EndpointRecord, EndpointSliceRecord } from "./records.js";

/** discovery.k8s.io/v1 EndpointSlice to a record. Pure; see convert-common.ts for the shared rules. */

const ENDPOINT_SLICE: KindSpec = {
  kind: "EndpointSlice",
  apiVersions: ["discovery.k8s.io/v1"],
  namespaced: true,
};

export const SERVICE_NAME_LABEL = "kubernetes.io/service-name";

const ADDRESS_TYPES = ["IPv4", "IPv6", "FQDN"] as const;
const PROTOCOLS = ["TCP", "UDP", "SCTP"] as const;
/** The API's own limits (EndpointSlice validation): 1000 endpoints, 100 addresses each, 100 ports. */
const MAX_ENDPOINTS = 1000;
const MAX_ADDRESSES = 100;
const MAX_PORTS = 100;

export function convertEndpointSlice(raw: unknown): Converted<EndpointSliceRecord> {
  const h = readHeader(raw, ENDPOINT_SLICE);
  if ("problem" in h) return h;
  const { errors } = h;
  const labels = readLabels(h.metadata.labels, "metadata.labels", errors);
  const service = labels[SERVICE_NAME_LABEL];
  if (!isDnsLabel(service)) errors.push(`label ${SERVICE_NAME_LABEL} must name a Service, got ${describe(service)}`);
  if (h.object.addressType === undefined) errors.push("addressType is missing");
  const addressType = oneOf(h.object.addressType, "addressType", ADDRESS_TYPES, "FQDN", errors);
  const endpoints = optionalArray(h.object.endpoints, "endpoints", MAX_ENDPOINTS, errors).map((e, i) =>
    endpoint(e, `endpoints[${i}]`, addressType, h.namespace, errors),
  );
  const ports = slicePorts(h.object.ports, errors);
  return finish(ENDPOINT_SLICE, h, () => ({
    name: h.name,
    namespace: h.namespace,
    service: service as string,
    addressType,
    endpoints,
    ports,
  }));
}

function endpoint(
  e: unknown,
  at: string,
  addressType: EndpointSliceRecord["addressType"],
  sliceNamespace: string,
  errors: string[],
): EndpointRecord {
  if (!isRecord(e)) {
    errors.push(`${at} must be an object, got ${describe(e)}`);
    return { addresses: [], ready: false };
  }
  const addresses = optionalArray(e.addresses, `${at}.addresses`, MAX_ADDRESSES, errors);
  if (addresses.length === 0) errors.push(`${at}.addresses must list at least one address`);
  const want = addressType === "IPv4" ? 4 : addressType === "IPv6" ? 6 : undefined;
  const valid = (a: unknown) => (want === undefined ? isSubdomain(a) : ipFamily(a) === want);
  const bad = addresses.filter((a) => !valid(a));
  if (bad.length > 0)
    errors.push(`${at}.addresses has ${bad.length} that are not ${addressType}, e.g. ${describe(bad[0])}`);
  const conditions = optionalObject(e.conditions, `${at}.conditions`, errors);
  // The API: "nil should be interpreted as ready".
  const ready = conditions.ready === undefined || conditions.ready === null ? true : conditions.ready;
  if (typeof ready !== "boolean") errors.push(`${at}.conditions.ready must be a boolean, got ${describe(ready)}`);
  const record: EndpointRecord = { addresses: addresses as string[], ready: ready === true };
  const nodeName = optionalString(e.nodeName, `${at}.nodeName`, "", isSubdomain, errors, "a DNS-1123 subdomain");
  if (nodeName) record.nodeName = nodeName;
  const ref = optionalObject(e.targetRef, `${at}.targetRef`, errors);
  if (ref.kind === "Pod") {
    const ns =
      ref.namespace === undefined || ref.namespace === null || ref.namespace === "" ? sliceNamespace : ref.namespace;
    if (isSubdomain(ref.name) && isDnsLabel(ns)) record.pod = `${ns}/${ref.name}`;
    else errors.push(`${at}.targetRef names no valid pod (name ${describe(ref.name)}, namespace ${describe(ns)})`);
  }
  return record;
}

function slicePorts(v: unknown, errors: string[]): EndpointSliceRecord["ports"] {
  const ports: { name: string; port: number; protocol: string }[] = [];
  optionalArray(v, "ports", MAX_PORTS, errors).forEach((p, i) => {
    const at = `ports[${i}]`;
    if (!isRecord(p)) {
      errors.push(`${at} must be an object, got ${describe(p)}`);
      return;
    }
    const name = optionalString(p.name, `${at}.name`, "", isDnsLabel, errors, "a DNS-1123 label");
    const protocol = oneOf(p.protocol, `${at}.protocol`, PROTOCOLS, "TCP", errors);
    // The API allows a port without a number ("ports are not restricted", for Services that declare none): ambit
    // would not know what to dial and no Service port can match it, so the entry is left out rather than refused.
    if (p.port === undefined || p.port === null) return;
    if (!isPort(p.port)) {
      errors.push(`${at}.port must be a port number (1-65535), got ${describe(p.port)}`);
      return;
    }
    ports.push({ name, port: p.port, protocol });
  });
  return ports;
}
