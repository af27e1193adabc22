// `tray down`: stop the agents and remove what `up` created, then say what was removed.
import { loadClusterConfig } from "../config/index.js";
import { downLocal } from "./local.js";
import { readState, withClusterLock } from "./state.js";
import type { Progress } from "./progress.js";

export interface DownOptions {
  name?: string;
  workersOnly?: boolean;
  lockWaitMs?: number;
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
  if (state?.status === "down") return { name, alreadyDown: true, removed: [], elapsedMs: Date.now() - t0 };
  const { loadProvider } = await import("../providers/index.js");
  const { downRemote } = await import("./remote.js");
  const provider = await loadProvider(config as any);
  const r = await downRemote(config, provider, { name, workersOnly: opts.workersOnly, lockWaitMs: opts.lockWaitMs }, progress);
  const removed = [
    ...r.hosts.map((h) => `${h.name} (${h.host}): ${h.status}${h.error ? ` — ${h.error}` : ""}`),
    ...r.removed.map((x) => `${x.kind} ${x.id}`),
  ];
  return { name, alreadyDown: false, removed, elapsedMs: r.elapsedMs };
}
