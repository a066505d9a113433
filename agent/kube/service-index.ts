import type { ClusterState } from "./cluster-state.js";
import { canonicalIp } from "./ip.js";
import type { EndpointSliceRecord, ServicePortRecord, ServiceRecord } from "./records.js";
import { objectKey } from "./records.js";

/**
 * ClusterIP -> Service port -> ready endpoints, built once per ClusterState snapshot. Pure (no I/O).
 *
 * lookup() is one Map read keyed by the canonical ClusterIP, port and protocol. Building is linear in services plus
 * slices: the endpoints of a Service port are gathered on its first pick() only (most Services of a cluster are never
 * dialled from one node) and kept for the life of the index.
 *
 * Endpoints: those of every EndpointSlice of the Service whose address family is the ClusterIP's (an IPv4 ClusterIP
 * gets IPv4 endpoints), at the port the slice lists under the Service port's name and protocol (a Service's single
 * unnamed port matches the slice port named ""), ready ones only. An endpoint is its first address, as the API tells
 * consumers they may do (the addresses of one endpoint are fungible). An address listed by several slices (the
 * controller moving it between slices) counts once, ready if any copy says so. Order is stable (canonical address,
 * then port), whatever order the slices came in.
 */

export interface ServiceTarget {
  readonly service: ServiceRecord;
  readonly port: ServicePortRecord;
  /** The ClusterIP that was dialled, in canonical form (see canonicalIp). */
  readonly clusterIp: string;
  readonly family: 4 | 6;
}

export interface PickedEndpoint {
  ip: string;
  /** The port on the endpoint (the Service port's target port, as the EndpointSlice resolved it). */
  port: number;
  /** `namespace/name` of the pod behind it, when the slice says. */
  pod?: string;
  nodeName?: string;
}

export type PickResult = { endpoint: PickedEndpoint } | { reason: "no_ready_endpoint" };

interface Rotation {
  target: ServiceTarget;
  /** Gathered on first pick. */
  endpoints?: readonly PickedEndpoint[];
  next: number;
}

export class ServiceIndex {
  readonly #byAddress = new Map<string, Rotation>();
  readonly #rotations = new Map<string, Rotation>();
  /** This index's own targets, to skip building the rotation key on every pick. */
  readonly #byTarget = new WeakMap<ServiceTarget, Rotation>();
  readonly #slices = new Map<string, EndpointSliceRecord[]>();

  constructor(services: Iterable<ServiceRecord>, endpointSlices: Iterable<EndpointSliceRecord>) {
    for (const slice of endpointSlices) {
      const key = objectKey({ namespace: slice.namespace, name: slice.service });
      const list = this.#slices.get(key);
      if (list) list.push(slice);
      else this.#slices.set(key, [slice]);
    }
    for (const service of services) {
      for (const ip of service.clusterIPs) {
        const clusterIp = canonicalIp(ip);
        // Family of the canonical form: an IPv4-mapped IPv6 address is the IPv4 one.
        const family = clusterIp === undefined ? 0 : clusterIp.includes(":") ? 6 : 4;
        if (clusterIp === undefined || family === 0) continue;
        for (const port of service.ports) this.#add({ service, port, clusterIp, family });
      }
    }
  }

  static of(state: Pick<ClusterState, "services" | "endpointSlices">): ServiceIndex {
    return new ServiceIndex(state.services.values(), state.endpointSlices.values());
  }

  /** How many ClusterIP:port entries the index holds. */
  get size(): number {
    return this.#byAddress.size;
  }

  /** The Service port behind `ip`:`port` (any textual form of the address), or undefined if no Service has it. */
  lookup(ip: string, port: number, protocol = "TCP"): ServiceTarget | undefined {
    const canonical = canonicalIp(ip);
    if (canonical === undefined) return undefined;
    return this.#byAddress.get(addressKey(canonical, port, protocol))?.target;
  }

  /**
   * The next ready endpoint of a target (round-robin per Service port and family), or no_ready_endpoint. A target
   * from an earlier index of the same Service port is answered from this one's endpoints.
   */
  pick(target: ServiceTarget): PickResult {
    const rotation = this.#byTarget.get(target) ?? this.#rotations.get(rotationKey(target));
    if (!rotation) return { reason: "no_ready_endpoint" };
    rotation.endpoints ??= this.#gather(rotation.target);
    const n = rotation.endpoints.length;
    if (n === 0) return { reason: "no_ready_endpoint" };
    // A fresh index starts each rotation at a random endpoint: indexes are rebuilt on every snapshot, and restarting
    // at the first endpoint each time would load it more than the others.
    if (rotation.next < 0) rotation.next = Math.floor(Math.random() * n);
    const endpoint = rotation.endpoints[rotation.next % n] as PickedEndpoint;
    rotation.next = (rotation.next + 1) % n;
    return { endpoint };
  }

  #add(target: ServiceTarget): void {
    const key = addressKey(target.clusterIp, target.port.port, target.port.protocol);
    const existing = this.#byAddress.get(key);
    // Two Services never share a ClusterIP; if a broken source says they do, the first by namespace/name keeps it,
    // whatever order the Services came in.
    if (existing && objectKey(existing.target.service) <= objectKey(target.service)) return;
    const rKey = rotationKey(target);
    let rotation = this.#rotations.get(rKey);
    if (!rotation) {
      rotation = { target, next: -1 };
      this.#rotations.set(rKey, rotation);
      this.#byTarget.set(target, rotation);
    }
    this.#byAddress.set(key, rotation);
  }

  #gather(target: ServiceTarget): PickedEndpoint[] {
    const addressType = target.family === 4 ? "IPv4" : "IPv6";
    const slices = (this.#slices.get(objectKey(target.service)) ?? []).filter((s) => s.addressType === addressType);
    slices.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const seen = new Map<string, { endpoint: PickedEndpoint; ready: boolean; order: string }>();
    for (const slice of slices) {
      const port = slice.ports.find((p) => p.name === target.port.name && p.protocol === target.port.protocol);
      if (!port) continue;
      for (const e of slice.endpoints) {
        const ip = e.addresses[0];
        const canonical = ip === undefined ? undefined : canonicalIp(ip);
        if (ip === undefined || canonical === undefined || canonical.includes(":") !== (target.family === 6)) continue;
        const key = `${canonical}|${port.port}`;
        const copy = seen.get(key);
        if (copy) {
          copy.ready ||= e.ready;
          continue;
        }
        const endpoint: PickedEndpoint = { ip, port: port.port };
        if (e.pod !== undefined) endpoint.pod = e.pod;
        if (e.nodeName !== undefined) endpoint.nodeName = e.nodeName;
        seen.set(key, { endpoint, ready: e.ready, order: key });
      }
    }
    return [...seen.values()]
      .filter((s) => s.ready)
      .sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0))
      .map((s) => s.endpoint);
  }
}

function addressKey(canonicalIp: string, port: number, protocol: string): string {
  return `${canonicalIp}|${port}|${protocol}`;
}

/** One rotation per Service port and family (a dual-stack Service has two). */
function rotationKey(t: ServiceTarget): string {
  return `${objectKey(t.service)}|${t.port.name}|${t.port.port}|${t.port.protocol}|${t.family}`;
}
