// `tray down`: stop the agents and remove what `up` created, then say what was removed.
import { loadClusterConfig } from "../config/index.js";
import { downLocal } from "./local.js";
import { readState, withClusterLock } from "./state.js";
import type { Progress } from "./progress.js";

export interface DownOptions {
  name?: string;
  workersOnly?: boolean;
  lockWaitMs?: number;
  /** Keep each worker type's min_workers (lowest-numbered) running; the rest goes. */
  keepMinWorkers?: boolean;
}

export interface DownSummary {
  name: string;
  alreadyDown: boolean;
  removed: string[];
  elapsedMs: number;
}

export async function down(configPath: string, opts: DownOptions, progress: Progress): Promise<DownSummary> {
  const t0 = Date.now();
  const config = loadClusterConfig(configPath);
  const name = opts.name ?? config.cluster_name;
  if (config.provider.type === "local") {
    return withClusterLock(name, "down", async () => {
      const state = readState(name);
      if (!state || state.status === "down") {
        return { name, alreadyDown: true, removed: [], elapsedMs: Date.now() - t0 };
      }
      const removed = await downLocal(state, progress, !!opts.workersOnly);
      return { name, alreadyDown: false, removed, elapsedMs: Date.now() - t0 };
    }, opts.lockWaitMs ?? 0);
  }
  const state = readState(name);
  const { loadProvider } = await import("../providers/index.js");
  const provider = await loadProvider(config as any);
  // A cloud cluster is down when nothing of it is left in the cloud (instances kept with
  // --keep-min-workers, or found by tag without local state, still count).
  if (state?.status === "down" && (!provider.capabilities.creates || state.nodes.length === 0)) {
    return { name, alreadyDown: true, removed: [], elapsedMs: Date.now() - t0 };
  }
  const { downRemote } = await import("./remote.js");
  const keepMinWorkers = opts.keepMinWorkers
    ? Object.fromEntries(Object.entries(config.available_node_types).map(([type, t]) => [type, t.min_workers]))
    : undefined;
  const r = await downRemote(config, provider, { name, workersOnly: opts.workersOnly, lockWaitMs: opts.lockWaitMs, keepMinWorkers }, progress);
  const removed = [
    ...r.hosts.map((h) => `${h.name} (${h.host}): ${h.status}${h.error ? ` — ${h.error}` : ""}`),
    ...r.removed.map((x) => `${x.kind} ${x.id}`),
  ];
  return { name, alreadyDown: false, removed, elapsedMs: r.elapsedMs };
}
