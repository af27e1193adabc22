// The `ssh` provider: a fixed list of hosts that already exist (Ray's on-prem "local"
// provider). Nothing is created or destroyed: runInstances hands out hosts from the list,
// queryInstances reports the hosts given to this cluster, terminateInstances releases them.
// Bootstrapping the hosts (SSH, agent) is the launcher's job, as for every provider.
import type {
  InstanceRecord,
  InstanceState,
  Provider,
  ProviderCapabilities,
  QueryFilter,
  RemovedResource,
  RunRequest,
} from "../interface.js";
import { TAG_CLUSTER, TAG_NODE_KIND, TAG_NODE_NAME, TAG_NODE_TYPE } from "../interface.js";
import { UserError } from "../../errors.js";
import { readState } from "../../launcher/state.js";

export interface SshProviderOptions {
  clusterName: string;
  headIp: string;
  workerIps: string[];
  /** auth.ssh_user */
  user: string;
  /** SSH port on every host (default 22; "host:port" entries override it). */
  port?: number;
  /** Hosts already handed out (from the cluster state): id -> record, so query works across runs. */
  known?: InstanceRecord[];
}

/** "10.0.0.1" | "10.0.0.1:2222" | "[fe80::1]:2222" -> host, port */
export function parseHostPort(s: string, defPort = 22): { host: string; port: number } {
  const v = s.trim();
  const m6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(v);
  if (m6) return { host: m6[1]!, port: m6[2] ? Number(m6[2]) : defPort };
  const m = /^([^:]+):(\d+)$/.exec(v);
  if (m) return { host: m[1]!, port: Number(m[2]) };
  return { host: v, port: defPort };
}

export class SshProvider implements Provider {
  readonly name = "ssh";
  readonly capabilities: ProviderCapabilities = { stop: false, creates: false, ssh: true };
  private readonly records = new Map<string, InstanceRecord>();

  constructor(private readonly o: SshProviderOptions) {
    for (const r of o.known ?? []) this.records.set(r.id, { ...r });
  }

  async bootstrap(): Promise<void> {
    const all = [this.o.headIp, ...this.o.workerIps].map((h) => parseHostPort(h, this.o.port).host);
    const dup = all.find((h, i) => all.indexOf(h) !== i);
    if (dup) throw new UserError(`The host ${dup} is listed twice in provider.head_ip / provider.worker_ips; each host can run one node of a cluster.`);
  }

  /** Hosts for a kind: head -> [head_ip], worker -> worker_ips. */
  private pool(kind: "head" | "worker"): string[] {
    return kind === "head" ? [this.o.headIp] : this.o.workerIps;
  }

  async runInstances(requests: RunRequest[]): Promise<InstanceRecord[]> {
    const out: InstanceRecord[] = [];
    for (const req of requests) {
      const inUse = new Set([...this.records.values()].filter((r) => r.state !== "terminated").map((r) => r.id));
      const free = this.pool(req.kind).filter((h) => !inUse.has(h));
      if (free.length < req.count) {
        throw new UserError(
          `The ssh provider has ${free.length} free ${req.kind === "head" ? "head host" : "worker host(s)"} but ${req.count} were asked for; add addresses to provider.${req.kind === "head" ? "head_ip" : "worker_ips"}.`,
        );
      }
      for (let i = 0; i < req.count; i++) {
        const id = free[i]!;
        const { host, port } = parseHostPort(id, this.o.port);
        const rec: InstanceRecord = {
          id,
          name: req.names[i]!,
          kind: req.kind,
          nodeType: req.nodeType,
          state: "running",
          privateIp: host,
          publicIp: host,
          ssh: { host, port, user: this.o.user },
          tags: {
            ...req.tags,
            [TAG_CLUSTER]: req.clusterName,
            [TAG_NODE_KIND]: req.kind,
            [TAG_NODE_TYPE]: req.nodeType,
            [TAG_NODE_NAME]: req.names[i]!,
          },
        };
        this.records.set(id, rec);
        out.push(rec);
      }
    }
    return out;
  }

  async queryInstances(filter: QueryFilter): Promise<InstanceRecord[]> {
    return [...this.records.values()].filter(
      (r) =>
        r.tags[TAG_CLUSTER] === filter.clusterName &&
        (!filter.kind || r.kind === filter.kind) &&
        (filter.includeTerminated || r.state !== "terminated"),
    );
  }

  async waitInstances(ids: string[], state: InstanceState): Promise<InstanceRecord[]> {
    // The hosts exist already; reachability is checked by the launcher's SSH step, which
    // gives the precise reason (refused, timeout, auth) per host.
    return ids.map((id) => {
      const r = this.records.get(id);
      if (!r) throw new UserError(`The host ${id} is not part of this cluster's provider.head_ip / worker_ips.`);
      if (r.state !== state && !(state === "running" && r.state === "pending")) r.state = state;
      return r;
    });
  }

  async terminateInstances(ids: string[]): Promise<RemovedResource[]> {
    for (const id of ids) {
      const r = this.records.get(id);
      if (r) r.state = "terminated";
    }
    return []; // nothing is destroyed: the hosts are the user's
  }

  async cleanup(): Promise<RemovedResource[]> {
    return [];
  }
}

/**
 * Build the provider from the validated YAML (provider.type === "ssh"). Hosts handed out by an
 * earlier `tray up` are found in the cluster's state file, so query/terminate work across runs.
 */
export function createProvider(config: { cluster_name: string; provider: { type: string }; auth?: { ssh_user?: string } }): SshProvider {
  const p = config.provider as { type: string; head_ip?: unknown; worker_ips?: unknown };
  if (p.type !== "ssh" || typeof p.head_ip !== "string" || !p.head_ip) {
    throw new UserError(`provider.head_ip is required for provider type ssh (e.g. head_ip: 192.168.1.10).`);
  }
  const workerIps = Array.isArray(p.worker_ips) ? p.worker_ips.map(String) : [];
  const user = String(config.auth?.ssh_user ?? process.env.USER ?? "root");
  // Hosts of an earlier `up` that are still in the YAML (a host removed from it is released).
  const listed = new Set([p.head_ip, ...workerIps]);
  const known: InstanceRecord[] = (readState(config.cluster_name)?.nodes ?? []).filter((n) => listed.has(n.id) && (n.kind === "head") === (n.id === p.head_ip)).map((n) => ({
    id: n.id,
    name: n.name,
    kind: n.kind,
    nodeType: n.nodeType,
    state: "running",
    ...(n.privateIp ? { privateIp: n.privateIp } : {}),
    ...(n.publicIp ? { publicIp: n.publicIp } : {}),
    ...(n.ssh ? { ssh: n.ssh } : {}),
    tags: { [TAG_CLUSTER]: config.cluster_name, [TAG_NODE_KIND]: n.kind, [TAG_NODE_TYPE]: n.nodeType, [TAG_NODE_NAME]: n.name },
  }));
  return new SshProvider({ clusterName: config.cluster_name, headIp: p.head_ip, workerIps, user, known });
}
