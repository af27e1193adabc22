// The `local` provider: nodes are agent processes on this machine. Nothing to create in a
// cloud; instances are the agents recorded in the cluster state (the local launcher starts
// and stops them). Declared here so every provider answers the same interface.
import type { InstanceRecord, Provider, QueryFilter, RemovedResource } from "../interface.js";
import { pidAlive, readState } from "../../launcher/state.js";

export function createProvider(config: { cluster_name: string }): Provider {
  const records = (filter: QueryFilter): InstanceRecord[] => {
    const s = readState(filter.clusterName ?? config.cluster_name);
    if (!s) return [];
    return s.nodes
      .filter((n) => !filter.kind || n.kind === filter.kind)
      .map((n) => ({
        id: n.id,
        name: n.name,
        kind: n.kind,
        nodeType: n.nodeType,
        state: n.pid && pidAlive(n.pid) ? ("running" as const) : ("terminated" as const),
        privateIp: "127.0.0.1",
        tags: {},
      }))
      .filter((r) => filter.includeTerminated || r.state !== "terminated");
  };
  return {
    name: "local",
    capabilities: { stop: false, creates: false, ssh: false },
    async bootstrap() {},
    async runInstances() {
      // The local launcher starts agent processes itself (src/launcher/local.ts).
      return [];
    },
    async queryInstances(filter) {
      return records(filter);
    },
    async waitInstances(ids) {
      return records({ clusterName: config.cluster_name }).filter((r) => ids.includes(r.id));
    },
    async terminateInstances(ids): Promise<RemovedResource[]> {
      const s = readState(config.cluster_name);
      const out: RemovedResource[] = [];
      for (const n of s?.nodes ?? []) {
        if (!ids.includes(n.id) || !n.pid) continue;
        try { process.kill(n.pid, "SIGTERM"); } catch { /* gone */ }
        out.push({ kind: "process", id: String(n.pid) });
      }
      return out;
    },
    async cleanup() {
      return [];
    },
  };
}
