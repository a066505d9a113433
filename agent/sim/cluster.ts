import { type ChildProcess, type SpawnOptions, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdirSync } from "node:fs";
import type { ClusterState } from "../kube/cluster-state.js";
import { stateFromObjects } from "../kube/objects-state.js";
import { type Logger, silentLogger } from "../log.js";
import { deleteNetnsMany, trackChild, trackNetns, untrackNetns } from "./cleanup.js";
import { SimCommandError, SimCreateError, SimUsageError } from "./errors.js";
import { kubeProxyRules, type NamespaceSpec, simObjects } from "./manifests.js";
import { claimOctet, releaseOctet } from "./octets.js";
import { type RunResult, run, systemToolsEnv } from "./run.js";
import {
  BRIDGE,
  defaultOctet,
  NETNS_DIR,
  POD_INTERFACE,
  planSimCluster,
  type SimClusterSpec,
  type SimNode,
  type SimPlan,
  type SimPod,
  type SimService,
  UPLINK,
} from "./topology.js";
import { writeFileAtomic } from "./write-atomic.js";

export interface CreateSimClusterOptions {
  logger?: Logger;
}

/**
 * A simulated cluster made of network namespaces: a fabric namespace with a bridge, one namespace per node (bridge
 * br0 with the pod gateway, forwarding on, an uplink veth into the fabric, routes to the other nodes' pod CIDRs)
 * and one per pod (eth0 veth onto its node's bridge, default route via the gateway). Every pod reaches every other.
 */
export class SimCluster {
  readonly prefix: string;
  readonly octet: number;
  readonly ipv6: boolean;
  readonly fabricNetnsName: string;
  readonly nodes: readonly SimNode[];
  readonly pods: readonly SimPod[];
  readonly services: readonly SimService[];
  readonly #plan: SimPlan;

  /** Namespaces this cluster created, in creation order (only these are ever deleted). */
  readonly #created: string[] = [];
  readonly #owned: Set<string>;
  readonly #children = new Set<ChildProcess>();
  readonly #log: Logger;
  #destroying: Promise<void> | undefined;

  /** The octet is ours to release (claimed by createSimCluster, not given by the caller). */
  readonly #claimedOctet: boolean;

  /** @internal Use createSimCluster. */
  constructor(plan: SimPlan, log: Logger, claimedOctet = false) {
    this.#claimedOctet = claimedOctet;
    this.prefix = plan.prefix;
    this.octet = plan.octet;
    this.ipv6 = plan.ipv6;
    this.fabricNetnsName = plan.fabricNetnsName;
    this.nodes = plan.nodes;
    this.pods = plan.pods;
    this.services = plan.services;
    this.#plan = plan;
    this.#log = log;
    this.#owned = new Set([
      plan.fabricNetnsName,
      ...plan.nodes.map((n) => n.netnsName),
      ...plan.pods.map((p) => p.netnsName),
    ]);
  }

  get destroyed(): boolean {
    return this.#destroying !== undefined;
  }

  /** Every netns name this cluster owns (fabric, nodes, pods). */
  get netnsNames(): string[] {
    return [...this.#owned];
  }

  /** The pod named `name` in `namespace` (default "default"); throws if there is none. */
  pod(name: string, namespace = "default"): SimPod {
    const pod = this.pods.find((p) => p.name === name && p.namespace === namespace);
    if (!pod) throw new SimUsageError(`no simulated pod ${namespace}/${name}`);
    return pod;
  }

  node(name: string): SimNode {
    const node = this.nodes.find((n) => n.name === name);
    if (!node) throw new SimUsageError(`no simulated node ${name}`);
    return node;
  }

  /** Runs `cmd args` inside one of this cluster's namespaces (ip netns exec); rejects with SimCommandError. */
  exec(
    netnsName: string,
    cmd: string,
    args: readonly string[] = [],
    options: { input?: string; timeoutMs?: number } = {},
  ): Promise<RunResult> {
    try {
      this.#checkNetns(netnsName);
    } catch (err) {
      return Promise.reject(err);
    }
    return run("ip", ["netns", "exec", netnsName, cmd, ...args], options);
  }

  /**
   * Starts a long-running `cmd args` inside one of this cluster's namespaces. The process is killed by destroy()
   * (and by the exit hooks), since a live process would keep a deleted namespace and its interfaces alive.
   */
  spawnIn(netnsName: string, cmd: string, args: readonly string[] = [], options: SpawnOptions = {}): ChildProcess {
    this.#checkNetns(netnsName);
    // `ip netns exec` execs the command in place, so the child's pid is the command's.
    const child = spawn("ip", ["netns", "exec", netnsName, cmd, ...args], {
      stdio: "pipe",
      env: systemToolsEnv(),
      ...options,
    });
    this.#children.add(child);
    trackChild(child);
    child.once("exit", () => this.#children.delete(child));
    return child;
  }

  /**
   * The cluster as Kubernetes objects (Namespaces, Pods with their IPs, Services and EndpointSlices, per-pod
   * PeerAuthentications), for a manifest source or an API server. `namespaces` add labels to namespaces.
   */
  objects(namespaces: readonly NamespaceSpec[] = []): Record<string, unknown>[] {
    return simObjects(this.#plan, namespaces);
  }

  /** The objects as one source would report them (for agents assembled in-process). */
  clusterState(namespaces: readonly NamespaceSpec[] = [], extra: readonly unknown[] = []): ClusterState {
    return stateFromObjects([...this.objects(namespaces), ...extra]);
  }

  /** Writes the objects (and `extra` ones) to `path` as one manifest file (a JSON List), atomically. */
  async writeManifests(path: string, namespaces: readonly NamespaceSpec[] = [], extra: readonly unknown[] = []) {
    await writeFileAtomic(path, { apiVersion: "v1", kind: "List", items: [...this.objects(namespaces), ...extra] });
  }

  /** Kills processes started with spawnIn and deletes every namespace this cluster made. Idempotent; never fails
   * because something is already gone. */
  destroy(): Promise<void> {
    this.#destroying ??= this.#teardown();
    return this.#destroying;
  }

  /** @internal */
  async build(onStep: SimClusterSpec["onStep"]): Promise<void> {
    const step = async (description: string, fn: () => Promise<unknown>): Promise<void> => {
      if (onStep) await onStep(description);
      this.#log.debug({ step: description }, "sim: step");
      await fn();
    };
    const ip = (ns: string, ...args: string[]) => run("ip", ["-n", ns, ...args]);
    const sysctl = (ns: string, settings: string[]) =>
      run("ip", ["netns", "exec", ns, "sysctl", "-q", "-w", ...settings]);
    const addNetns = async (name: string) => {
      await run("ip", ["netns", "add", name]);
      // Recorded only once it exists, and only if we made it: a clash with an existing namespace is never ours.
      this.#created.push(name);
      trackNetns(name);
    };
    // Addresses must be usable at once: no duplicate address detection on anything created afterwards.
    const noDad = ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"];
    const v6 = this.ipv6;
    const fab = this.fabricNetnsName;

    await step(`fabric ${fab}`, async () => {
      await addNetns(fab);
      if (v6) await sysctl(fab, noDad);
      await ip(fab, "link", "set", "lo", "up");
      await ip(fab, "link", "add", "name", BRIDGE, "type", "bridge", "mcast_snooping", "0");
      await ip(fab, "link", "set", BRIDGE, "up");
    });

    await settleAll(
      this.nodes.map((node) =>
        step(`node ${node.name} (${node.netnsName})`, async () => {
          const ns = node.netnsName;
          await addNetns(ns);
          await sysctl(ns, ["net.ipv4.ip_forward=1", ...(v6 ? ["net.ipv6.conf.all.forwarding=1", ...noDad] : [])]);
          await ip(ns, "link", "set", "lo", "up");
          await ip(ns, "link", "add", "name", BRIDGE, "type", "bridge", "mcast_snooping", "0");
          await ip(ns, "addr", "add", `${node.gateway4}/24`, "dev", BRIDGE);
          if (v6) await ip(ns, "-6", "addr", "add", `${node.gateway6}/64`, "dev", BRIDGE, "nodad");
          await ip(ns, "link", "set", BRIDGE, "up");
          // The uplink is created straight into both namespaces: its names never exist in the root namespace.
          const fabPort = `n${node.index}`;
          await ip(ns, "link", "add", "name", UPLINK, "type", "veth", "peer", "name", fabPort, "netns", fab);
          await ip(fab, "link", "set", fabPort, "master", BRIDGE, "up");
          await ip(ns, "addr", "add", `${node.uplink4}/24`, "dev", UPLINK);
          if (v6) await ip(ns, "-6", "addr", "add", `${node.uplink6}/64`, "dev", UPLINK, "nodad");
          await ip(ns, "link", "set", UPLINK, "up");
          for (const other of this.nodes) {
            if (other === node) continue;
            await ip(ns, "route", "add", other.podCidr4, "via", other.uplink4, "dev", UPLINK);
            if (v6) await ip(ns, "-6", "route", "add", `${other.podCidr6}`, "via", `${other.uplink6}`, "dev", UPLINK);
          }
        }),
      ),
    );

    await settleAll(
      this.nodes.flatMap((node) =>
        node.pods.map((pod) =>
          step(`pod ${pod.namespace}/${pod.name} on ${node.name} (${pod.netnsName})`, async () => {
            const ns = pod.netnsName;
            await addNetns(ns);
            if (v6) await sysctl(ns, noDad);
            await ip(ns, "link", "set", "lo", "up");
            await ip(
              ns,
              "link",
              "add",
              "name",
              POD_INTERFACE,
              "type",
              "veth",
              "peer",
              "name",
              pod.hostInterface,
              "netns",
              node.netnsName,
            );
            await ip(node.netnsName, "link", "set", pod.hostInterface, "master", BRIDGE, "up");
            await ip(ns, "addr", "add", `${pod.ipv4}/24`, "dev", POD_INTERFACE);
            if (v6) await ip(ns, "-6", "addr", "add", `${pod.ipv6}/64`, "dev", POD_INTERFACE, "nodad");
            await ip(ns, "link", "set", POD_INTERFACE, "up");
            await ip(ns, "route", "add", "default", "via", node.gateway4, "dev", POD_INTERFACE);
            if (v6) await ip(ns, "-6", "route", "add", "default", "via", `${node.gateway6}`, "dev", POD_INTERFACE);
            // The pod's sandbox: a process that keeps the namespace visible in /proc, where a node agent finds it.
            if (this.#plan.sandboxes) this.spawnIn(ns, "sleep", ["infinity"], { stdio: "ignore" });
          }),
        ),
      ),
    );

    const services = kubeProxyRules(this.#plan);
    if (services) {
      await settleAll(
        this.nodes.map((node) =>
          step(`services on ${node.name}`, () =>
            run("ip", ["netns", "exec", node.netnsName, "nft", "-f", "-"], { input: services }),
          ),
        ),
      );
    }
  }

  #checkNetns(netnsName: string): void {
    if (this.#destroying) throw new SimUsageError(`cluster ${this.prefix} is destroyed`);
    if (!this.#owned.has(netnsName)) {
      throw new SimUsageError(`network namespace "${netnsName}" does not belong to cluster ${this.prefix}`);
    }
  }

  async #teardown(): Promise<void> {
    await Promise.all([...this.#children].map(killChild));
    const names = [...this.#created].reverse();
    try {
      await deleteNetnsMany(names);
    } finally {
      for (const n of names) untrackNetns(n);
      if (this.#claimedOctet) releaseOctet(this.octet);
    }
    this.#log.debug({ prefix: this.prefix, namespaces: names.length }, "sim: cluster destroyed");
  }
}

/** Waits for every task (so none is still creating things during cleanup) and rethrows the first failure. */
async function settleAll(tasks: Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(tasks);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
}

function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), 1000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

function randomPrefix(): string {
  let existing: string[] = [];
  try {
    existing = readdirSync(NETNS_DIR);
  } catch {
    // No namespaces yet.
  }
  for (;;) {
    const prefix = `am${randomBytes(2).toString("hex")}`;
    if (!existing.some((n) => n.startsWith(`${prefix}-`))) return prefix;
  }
}

/**
 * Builds a simulated cluster. On failure everything made so far is deleted and a SimCreateError is thrown whose
 * cause is the failing step's error (a SimCommandError carries the command line and its stderr).
 */
export async function createSimCluster(
  spec: SimClusterSpec,
  options: CreateSimClusterOptions = {},
): Promise<SimCluster> {
  const log = options.logger ?? silentLogger;
  const prefix = spec.prefix ?? randomPrefix();
  const octet = spec.octet ?? claimOctet(defaultOctet(prefix));
  let plan: SimPlan;
  try {
    plan = planSimCluster({ ...spec, octet }, prefix);
  } catch (err) {
    if (spec.octet === undefined) releaseOctet(octet);
    throw err;
  }
  const cluster = new SimCluster(plan, log, spec.octet === undefined);
  const started = Date.now();
  try {
    await cluster.build(spec.onStep);
  } catch (err) {
    const what = err instanceof SimCommandError ? err.message : String(err instanceof Error ? err.message : err);
    log.error({ prefix: plan.prefix, err }, "sim: cluster creation failed, removing what was made");
    try {
      await cluster.destroy();
    } catch (cleanupErr) {
      log.error({ prefix: plan.prefix, err: cleanupErr }, "sim: cleanup after failed creation failed too");
    }
    throw new SimCreateError(`creating simulated cluster ${plan.prefix} failed: ${what}`, err);
  }
  log.info(
    { prefix: plan.prefix, nodes: plan.nodes.length, pods: plan.pods.length, ms: Date.now() - started },
    "sim: cluster ready",
  );
  return cluster;
}
