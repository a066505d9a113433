import { Counter, Gauge, type Registry } from "prom-client";
import { RESTART_REASONS, type RestartReason, type WatchObserver } from "./watch-status.js";

/**
 * The list-watches' Prometheus series, registered on a given registry; the returned observer is what
 * KubeApiSource reports to. Labels: `resource` (the store's names: a fixed set per process) and `reason` (the
 * closed RESTART_REASONS set), so the series count is bounded.
 *
 * - ambit_kube_watch_restarts_total{resource,reason}: every series exists from the start (at 0), so rate() works
 *   from the first scrape;
 * - ambit_kube_relists_total{resource}: lists after the first one (410 Expired, a path gone);
 * - ambit_kube_newest_event_age_seconds{resource}: now minus the newest event, bookmark or completed list; with
 *   bookmarks about once a minute, a value well above that means the view is stale;
 * - ambit_kube_watch_synced{resource}: 1 once the first list completed.
 * Call it once per registry (prom-client refuses a second metric of the same name).
 */
export function registerKubeWatchMetrics(registry: Registry, now: () => number = Date.now): WatchObserver {
  const registers = [registry];
  const restarts = new Counter({
    name: "ambit_kube_watch_restarts_total",
    help: "Kubernetes API list-watch restarts by resource and reason (timeout is the planned rotation)",
    labelNames: ["resource", "reason"],
    registers,
  });
  const relists = new Counter({
    name: "ambit_kube_relists_total",
    help: "Kubernetes API relists (after the first list) by resource",
    labelNames: ["resource"],
    registers,
  });
  const synced = new Gauge({
    name: "ambit_kube_watch_synced",
    help: "1 once the first list of the resource completed",
    labelNames: ["resource"],
    registers,
  });
  const newest = new Map<string, number>();
  new Gauge({
    name: "ambit_kube_newest_event_age_seconds",
    help: "Seconds since the newest watch event, bookmark or completed list of the resource",
    labelNames: ["resource"],
    registers,
    collect() {
      const t = now();
      for (const [resource, at] of newest) this.set({ resource }, Math.max(0, (t - at) / 1000));
    },
  });
  return {
    attached(resource: string) {
      for (const reason of RESTART_REASONS) restarts.inc({ resource, reason }, 0);
      relists.inc({ resource }, 0);
      synced.set({ resource }, 0);
    },
    listed(resource: string, info: { relist: boolean }) {
      synced.set({ resource }, 1);
      if (info.relist) relists.inc({ resource });
    },
    restarted(resource: string, reason: RestartReason) {
      restarts.inc({ resource, reason });
    },
    activity(resource: string, atMs: number) {
      newest.set(resource, atMs);
    },
  };
}
