// `tray up`: read the YAML, then bring the cluster up with the launcher of its provider.
import path from "node:path";
import { loadClusterConfig } from "../config/index.js";
import { upLocal } from "./local.js";
import type { Progress } from "./progress.js";

export interface UpOptions {
  name?: string;
  noRestart?: boolean;
  restartOnly?: boolean;
  lockWaitMs?: number;
}

export interface UpSummary {
  name: string;
  provider: string;
  headAddress: string;
  nodes: number;
  changed: boolean;
  notes: string[];
  elapsedMs: number;
}

export async function up(configPath: string, opts: UpOptions, progress: Progress): Promise<UpSummary> {
  const t0 = Date.now();
  const config = loadClusterConfig(configPath);
  if (opts.name) config.cluster_name = opts.name;
  const { withClusterLock } = await import("./state.js");
  if (config.provider.type === "local") {
    return withClusterLock(config.cluster_name, "up", async () => {
      const r = await upLocal(config, configPath, progress);
      return {
        name: config.cluster_name,
        provider: "local",
        headAddress: `${r.state.head!.apiHost}:${r.state.head!.apiPort}`,
        nodes: r.state.nodes.length,
        changed: r.changed,
        notes: config.notes,
        elapsedMs: Date.now() - t0,
      };
    }, opts.lockWaitMs ?? 0);
  }
  const { loadProvider } = await import("../providers/index.js");
  const { upRemote } = await import("./remote.js");
  const provider = await loadProvider(config as any);
  const r = await upRemote(config, provider, { ...opts, configPath: path.resolve(configPath) }, progress);
  return {
    name: r.name,
    provider: config.provider.type,
    headAddress: r.headIp,
    nodes: r.hosts.length,
    changed: r.hosts.some((h) => h.ran.length > 0),
    notes: config.notes,
    elapsedMs: r.elapsedMs,
  };
}
