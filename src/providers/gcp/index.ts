// GCP provider: Compute Engine through @google-cloud/compute (REST "fallback" transport,
// loaded with import() on first use), credentials from google-auth-library's Application
// Default Credentials chain (GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC file, metadata server).
//
// Resources tray creates: two firewall rules on the network (`tray-<cluster>-ssh`: tcp:22 from
// the caller's CIDR to the cluster's network tag; `tray-<cluster>-internal`: everything between
// instances carrying that tag), firewall rules carry no labels so their description holds
// "[tray-cluster-name=<cluster>]"; per node an instance and its boot disk, both labelled.
// The user's PUBLIC key goes into each instance's `ssh-keys` metadata.
//
// Endpoint: CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE (gcloud's own override, e.g.
// https://compute.googleapis.com/compute/v1/). The SDK retries nothing, so every call goes
// through retry.ts: HTTP 429, rateLimitExceeded, 5xx and network errors are retried with
// backoff; everything else fails at once.
import crypto from "node:crypto";
import { UserError } from "../../errors.js";
import {
  TAG_CLUSTER,
  TAG_NODE_KIND,
  TAG_NODE_NAME,
  TAG_NODE_TYPE,
  type InstanceRecord,
  type InstanceState,
  type Provider,
  type QueryFilter,
  type RemovedResource,
  type RunRequest,
} from "../interface.js";
import {
  callerCidr,
  extraTags,
  nodeTags,
  pollUntil,
  readPublicKey,
  requireProviderString,
  sshUser,
  useInternalIps,
  zoneList,
  type ProviderClusterConfig,
} from "../index.js";
import { cloudUserError, oneLine, retryLog, withRetry, type CloudErrorInfo } from "../retry.js";

type Compute = typeof import("@google-cloud/compute");

const DEFAULT_IMAGE = "projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts";

const CAPACITY = new Set([
  "ZONE_RESOURCE_POOL_EXHAUSTED",
  "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
  "RESOURCE_POOL_EXHAUSTED",
  "UNSUPPORTED_OPERATION", // e.g. a machine type that the zone does not offer
  "resourcePoolExhausted",
]);
const QUOTA = new Set(["QUOTA_EXCEEDED", "quotaExceeded", "QUOTA_LIMIT", "limitExceeded"]);
const PERMISSION = new Set(["forbidden", "accessNotConfigured", "PERMISSION_DENIED", "insufficientPermissions", "IAM_PERMISSION_DENIED"]);
const THROTTLING = new Set(["rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED", "backendError", "internalError"]);
const NETWORK = new Set(["ECONNRESET", "ECONNREFUSED", "ETIMEDOUT", "EPIPE", "EAI_AGAIN", "ERR_STREAM_PREMATURE_CLOSE"]);

/** GCE label values: lowercase letters, digits, "_" and "-", at most 63 characters. */
export function gcpLabelValue(v: string): string {
  return v
    .toLowerCase()
    .replace(/[^a-z0-9_-]/g, "-")
    .slice(0, 63);
}

/** GCE label keys: as values, and starting with a letter. */
export function gcpLabelKey(k: string): string {
  const s = gcpLabelValue(k);
  return /^[a-z]/.test(s) ? s : `k-${s}`.slice(0, 63);
}

export function gcpLabels(tags: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(tags)) out[gcpLabelKey(k)] = gcpLabelValue(v);
  return out;
}

/** GCE resource names: [a-z]([-a-z0-9]{0,61}[a-z0-9])?. */
export function gcpName(s: string): string {
  let n = s.toLowerCase().replace(/[^a-z0-9-]/g, "-").replace(/-+/g, "-");
  if (!/^[a-z]/.test(n)) n = "t-" + n;
  n = n.slice(0, 63).replace(/-+$/, "");
  return n || "tray";
}

/** Classify an error from @google-cloud/compute (REST fallback) or an operation's error (pure: unit-tested). */
export function classifyGcpError(err: unknown): CloudErrorInfo {
  const e = err as any;
  // REST errors arrive as a GaxiosError whose message (and response.data) is the JSON body
  // {"error":{"code":429,"message":"...","errors":[{"reason":"rateLimitExceeded",...}],"status":"RESOURCE_EXHAUSTED"}}
  let body: any = e?.response?.data;
  if (typeof body === "string") body = tryJson(body);
  if (!body?.error && typeof e?.message === "string" && e.message.trimStart().startsWith("{")) body = tryJson(e.message);
  const api = body?.error && typeof body.error === "object" ? body.error : undefined;
  // an operation's error: { errors: [{ code: "ZONE_RESOURCE_POOL_EXHAUSTED", message }] }
  const opErr = e?.errors?.[0];
  const reason: string | undefined = api?.errors?.[0]?.reason ?? (typeof opErr?.code === "string" ? opErr.code : undefined) ?? e?.reason;
  const rawStatus = api?.code ?? e?.status ?? e?.response?.status ?? e?.code;
  const status: number | undefined = typeof rawStatus === "number" ? (rawStatus >= 100 ? rawStatus : grpcToHttp(rawStatus)) : undefined;
  const code = reason ?? api?.status ?? (typeof e?.code === "string" ? e.code : undefined) ?? (status ? `HTTP ${status}` : "Error");
  const message = String(api?.message ?? opErr?.message ?? e?.details ?? e?.message ?? err);
  let cls: CloudErrorInfo["cls"] = "other";
  if (/Could not load the default credentials|Could not refresh access token|invalid_grant|No credentials/i.test(message)) cls = "credentials";
  else if (CAPACITY.has(code)) cls = "capacity";
  else if (QUOTA.has(code)) cls = "quota";
  else if (THROTTLING.has(code) || status === 429 || (status !== undefined && status >= 500)) cls = "transient";
  else if (NETWORK.has(e?.code) || NETWORK.has(e?.error?.code)) cls = "transient";
  else if (PERMISSION.has(code) || status === 403) cls = "permission";
  else if (status === 401) cls = "credentials";
  else if (status === 404 || code === "notFound") cls = "not-found";
  else if (status === 409 || code === "alreadyExists" || code === "resourceInUseByAnotherResource") cls = "conflict";
  return { cls, code, message, ...(status !== undefined ? { status } : {}) };
}

function tryJson(s: string): any {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}

function grpcToHttp(c: number): number | undefined {
  return ({ 3: 400, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 13: 500, 14: 503, 16: 401, 4: 504 } as Record<number, number>)[c];
}

const STATE: Record<string, InstanceState> = {
  PROVISIONING: "pending",
  STAGING: "pending",
  RUNNING: "running",
  STOPPING: "stopping",
  SUSPENDING: "stopping",
  REPAIRING: "pending",
  STOPPED: "stopped",
  SUSPENDED: "stopped",
  TERMINATED: "stopped", // GCE's TERMINATED is a stopped instance
};

function lastPart(s: string | null | undefined): string {
  return String(s ?? "").split("/").pop() ?? "";
}

/**
 * The five clients tray uses, imported one by one: the package's index loads every Compute
 * client of v1 and v1beta (about 5 s on a small machine, paid by every `tray up`); these take
 * under 1 s. Falls back to the index if a future version moves the files.
 */
async function loadCompute(): Promise<Pick<Compute, "InstancesClient" | "FirewallsClient" | "DisksClient" | "ZoneOperationsClient" | "GlobalOperationsClient">> {
  try {
    const [i, f, d, z, g] = await Promise.all([
      import("@google-cloud/compute/build/src/v1/instances_client.js"),
      import("@google-cloud/compute/build/src/v1/firewalls_client.js"),
      import("@google-cloud/compute/build/src/v1/disks_client.js"),
      import("@google-cloud/compute/build/src/v1/zone_operations_client.js"),
      import("@google-cloud/compute/build/src/v1/global_operations_client.js"),
    ]);
    const pick = (m: any, n: string) => m[n] ?? m.default?.[n];
    return {
      InstancesClient: pick(i, "InstancesClient"),
      FirewallsClient: pick(f, "FirewallsClient"),
      DisksClient: pick(d, "DisksClient"),
      ZoneOperationsClient: pick(z, "ZoneOperationsClient"),
      GlobalOperationsClient: pick(g, "GlobalOperationsClient"),
    };
  } catch {
    return await import("@google-cloud/compute");
  }
}

interface Clients {
  instances: InstanceType<Compute["InstancesClient"]>;
  firewalls: InstanceType<Compute["FirewallsClient"]>;
  disks: InstanceType<Compute["DisksClient"]>;
  zoneOps: InstanceType<Compute["ZoneOperationsClient"]>;
  globalOps: InstanceType<Compute["GlobalOperationsClient"]>;
}

export class GcpProvider implements Provider {
  readonly name = "gcp";
  readonly capabilities = { stop: true, creates: true, ssh: true };
  readonly project: string;
  readonly cluster: string;
  readonly zones: string[];
  readonly networkTag: string;
  private clients?: Clients;

  constructor(private config: ProviderClusterConfig) {
    this.cluster = config.cluster_name;
    this.project = requireProviderString(config, "project_id", "my-project-123456");
    this.zones = zoneList(config.provider.availability_zones ?? config.provider.availability_zone);
    if (!this.zones.length) throw new UserError(`provider.availability_zone is required for provider type gcp (e.g. availability_zone: us-west1-a).`);
    this.networkTag = gcpName(`tray-${this.cluster}`);
  }

  private async api(): Promise<Clients> {
    if (this.clients) return this.clients;
    const compute = await loadCompute();
    const { GoogleAuth } = await import("google-auth-library");
    const auth = new GoogleAuth({ scopes: ["https://www.googleapis.com/auth/cloud-platform"], projectId: this.project });
    let authClient: any;
    try {
      authClient = await auth.getClient();
    } catch (e: any) {
      throw new UserError(`No GCP credentials found (${oneLine(e?.message ?? String(e), 160)}).`, {
        cause: e,
        hint: "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file",
      });
    }
    const opts: any = { fallback: true, authClient, projectId: this.project };
    const override = process.env.CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE;
    if (override) {
      const u = new URL(override);
      opts.apiEndpoint = u.hostname;
      opts.port = Number(u.port || (u.protocol === "http:" ? 80 : 443));
      opts.protocol = u.protocol.replace(":", "");
    }
    this.clients = {
      instances: new compute.InstancesClient(opts),
      firewalls: new compute.FirewallsClient(opts),
      disks: new compute.DisksClient(opts),
      zoneOps: new compute.ZoneOperationsClient(opts),
      globalOps: new compute.GlobalOperationsClient(opts),
    };
    return this.clients;
  }

  /** One API call with retries of transient errors; other errors raw (see userError). */
  private async call<T>(action: string, fn: (c: Clients) => Promise<T>): Promise<T> {
    const c = await this.api();
    return withRetry(() => fn(c), {
      attempts: 8,
      baseMs: 500,
      isTransient: (e) => classifyGcpError(e).cls === "transient",
      onRetry: (e, attempt, ms) => retryLog(`GCP ${action}: ${classifyGcpError(e).code}, retry ${attempt} in ${ms} ms`),
    });
  }

  private userError(action: string, e: unknown): unknown {
    if (e instanceof UserError) return e;
    const info = classifyGcpError(e);
    if (info.cls === "other" && !(e as any)?.code && !(e as any)?.errors) return e; // a bug, not the cloud
    return cloudUserError("GCP", action, info, e);
  }

  /** Wait for a zonal or global operation; resolves with its error (if any) instead of throwing. */
  private async waitOp(action: string, op: any, zone?: string): Promise<{ code: string; message: string } | undefined> {
    let cur = op?.latestResponse ?? op;
    const name = cur?.name;
    if (!name) return undefined;
    while (cur?.status !== "DONE") {
      cur = await this.call(action, async (c) =>
        zone
          ? (await c.zoneOps.wait({ project: this.project, zone, operation: String(name) }))[0]
          : (await c.globalOps.wait({ project: this.project, operation: String(name) }))[0],
      );
    }
    const err = cur?.error?.errors?.[0];
    return err ? { code: String(err.code), message: String(err.message ?? "") } : undefined;
  }

  // ------------------------------------------------------------------ firewall

  async bootstrap(): Promise<void> {
    await this.api();
    const cidr = await callerCidr(this.config);
    const network = String(this.config.provider.network ?? "global/networks/default");
    const marker = `[${TAG_CLUSTER}=${this.cluster}]`;
    const rules = [
      {
        name: gcpName(`tray-${this.cluster}-ssh`),
        description: `tray: SSH from the tray CLI ${marker}`,
        network,
        direction: "INGRESS",
        priority: 1000,
        sourceRanges: [cidr],
        targetTags: [this.networkTag],
        allowed: [{ IPProtocol: "tcp", ports: ["22"] }],
      },
      {
        name: gcpName(`tray-${this.cluster}-internal`),
        description: `tray: all traffic within the cluster ${marker}`,
        network,
        direction: "INGRESS",
        priority: 1000,
        sourceTags: [this.networkTag],
        targetTags: [this.networkTag],
        allowed: [{ IPProtocol: "all" }],
      },
    ];
    for (const rule of rules) {
      const existing = await this.call("firewalls.get", async (c) => (await c.firewalls.get({ project: this.project, firewall: rule.name }))[0]).catch((e) => {
        if (classifyGcpError(e).cls === "not-found") return undefined;
        throw this.userError(`firewalls.get ${rule.name}`, e);
      });
      if (existing) {
        if (!String(existing.description ?? "").includes(marker)) {
          throw new UserError(`GCP firewall rule ${rule.name} exists but was not made by tray for cluster ${this.cluster}; remove it or rename the cluster.`);
        }
        const same = JSON.stringify(existing.sourceRanges ?? []) === JSON.stringify(rule.sourceRanges ?? []);
        if (same) continue;
        // the caller's address changed: SSH follows it (patched in place, no window without a rule)
        try {
          const [op] = await this.call("firewalls.patch", (c) =>
            c.firewalls.patch({ project: this.project, firewall: rule.name, firewallResource: { sourceRanges: rule.sourceRanges } as any, requestId: crypto.randomUUID() }),
          );
          const err = await this.waitOp("firewalls.patch", op);
          if (err) throw Object.assign(new Error(err.message), { errors: [err] });
        } catch (e) {
          throw this.userError(`firewalls.patch ${rule.name}`, e);
        }
        continue;
      }
      try {
        // requestId: a retried insert (after a 5xx whose request did succeed) is not done twice
        const requestId = crypto.randomUUID();
        const [op] = await this.call("firewalls.insert", (c) => c.firewalls.insert({ project: this.project, firewallResource: rule as any, requestId }));
        const err = await this.waitOp("firewalls.insert", op);
        if (err) throw Object.assign(new Error(err.message), { errors: [err] });
      } catch (e) {
        if (classifyGcpError(e).cls === "conflict") continue;
        throw this.userError(`firewalls.insert ${rule.name}`, e);
      }
    }
  }

  private async deleteFirewall(name: string): Promise<boolean> {
    try {
      const [op] = await this.call("firewalls.delete", (c) => c.firewalls.delete({ project: this.project, firewall: name }));
      const err = await this.waitOp("firewalls.delete", op);
      if (err) throw Object.assign(new Error(err.message), { errors: [err] });
      return true;
    } catch (e) {
      if (classifyGcpError(e).cls === "not-found") return false;
      throw this.userError(`firewalls.delete ${name}`, e);
    }
  }

  // ------------------------------------------------------------------ instances

  async runInstances(requests: RunRequest[]): Promise<InstanceRecord[]> {
    await this.api();
    const pub = await readPublicKey(this.config);
    const user = sshUser(this.config, "ubuntu");
    const out: InstanceRecord[] = [];
    for (const req of requests) {
      const nc = req.nodeConfig ?? {};
      const launches = req.names.map(async (nodeName) => {
        const name = gcpName(nodeName);
        const tags = nodeTags(req.clusterName, req.nodeType, req.kind, nodeName, { ...extraTags(this.config), ...req.tags });
        const labels = { ...gcpLabels((nc.labels as Record<string, string>) ?? {}), ...gcpLabels(tags) };
        let lastErr: unknown;
        for (const zone of this.zones) {
          const body = this.instanceBody(name, zone, nc, labels, `${user}:${pub}`);
          try {
            const requestId = crypto.randomUUID();
            const [op] = await this.call("instances.insert", (c) => c.instances.insert({ project: this.project, zone, instanceResource: body, requestId }));
            const err = await this.waitOp("instances.insert", op, zone);
            if (err) throw Object.assign(new Error(err.message), { errors: [err] });
          } catch (e) {
            const info = classifyGcpError(e);
            lastErr = e;
            if (info.cls === "capacity") continue;
            if (info.cls === "conflict" && info.code === "alreadyExists") {
              // created by an earlier, interrupted `up`: adopt it when it is ours
              const found = await this.getInstance(zone, name);
              if (found && found.labels?.[gcpLabelKey(TAG_CLUSTER)] === gcpLabelValue(this.cluster)) return this.record(found);
            }
            throw this.userError(`instances.insert (${name} in ${zone})`, e);
          }
          const inst = await this.getInstance(zone, name);
          if (!inst) throw new Error(`GCE instance ${name} in ${zone} vanished right after it was created`);
          return this.record(inst);
        }
        throw this.userError(`instances.insert (${name}, zones tried: ${this.zones.join(", ")})`, lastErr);
      });
      const settled = await Promise.allSettled(launches);
      for (const s of settled) if (s.status === "fulfilled") out.push(s.value);
      const failed = settled.find((s) => s.status === "rejected") as PromiseRejectedResult | undefined;
      if (failed) throw failed.reason;
    }
    return out;
  }

  private instanceBody(name: string, zone: string, nc: Record<string, any>, labels: Record<string, string>, sshKeyLine: string): any {
    const diskLabels = labels;
    const disks: any[] = Array.isArray(nc.disks)
      ? nc.disks.map((d: any) => ({ ...d, initializeParams: d.initializeParams ? { ...d.initializeParams, labels: { ...(d.initializeParams.labels ?? {}), ...diskLabels } } : undefined }))
      : [
          {
            boot: true,
            autoDelete: true,
            type: "PERSISTENT",
            initializeParams: {
              sourceImage: String(nc.sourceImage ?? DEFAULT_IMAGE),
              diskSizeGb: String(nc.diskSizeGb ?? nc.disk_size_gb ?? 50),
              labels: diskLabels,
            },
          },
        ];
    const metaItems: { key: string; value: string }[] = [];
    const userMeta = nc.metadata?.items ?? (nc.metadata && typeof nc.metadata === "object" ? Object.entries(nc.metadata).map(([key, value]) => ({ key, value: String(value) })) : []);
    let sshKeys = sshKeyLine;
    for (const m of userMeta) {
      if (m.key === "ssh-keys") sshKeys = `${sshKeyLine}\n${m.value}`;
      else metaItems.push({ key: String(m.key), value: String(m.value) });
    }
    metaItems.push({ key: "ssh-keys", value: sshKeys });
    const external = !useInternalIps(this.config);
    const nics = Array.isArray(nc.networkInterfaces)
      ? nc.networkInterfaces
      : [{ network: String(this.config.provider.network ?? "global/networks/default"), accessConfigs: external ? [{ name: "External NAT", type: "ONE_TO_ONE_NAT" }] : [] }];
    const netTags: string[] = [...((nc.tags?.items as string[]) ?? []), this.networkTag];
    const body: any = {
      name,
      machineType: `zones/${zone}/machineTypes/${String(nc.machineType ?? "n2-standard-2")}`,
      labels,
      tags: { items: netTags },
      metadata: { items: metaItems },
      disks,
      networkInterfaces: nics,
    };
    if (nc.scheduling) body.scheduling = nc.scheduling;
    else if (nc.preemptible === true || nc.spot === true) body.scheduling = { provisioningModel: "SPOT", preemptible: true, automaticRestart: false, onHostMaintenance: "TERMINATE", instanceTerminationAction: "DELETE" };
    if (nc.serviceAccounts) body.serviceAccounts = nc.serviceAccounts;
    if (nc.guestAccelerators) body.guestAccelerators = nc.guestAccelerators;
    return body;
  }

  private async getInstance(zone: string, name: string): Promise<any | undefined> {
    try {
      return (await this.call("instances.get", (c) => c.instances.get({ project: this.project, zone, instance: name })))[0];
    } catch (e) {
      if (classifyGcpError(e).cls === "not-found") return undefined;
      throw this.userError("instances.get", e);
    }
  }

  private record(i: any): InstanceRecord {
    const labels: Record<string, string> = i.labels ?? {};
    const nic = i.networkInterfaces?.[0];
    const privateIp: string | undefined = nic?.networkIP || undefined;
    const publicIp: string | undefined = nic?.accessConfigs?.[0]?.natIP || undefined;
    const host = useInternalIps(this.config) ? privateIp : publicIp ?? privateIp;
    const rec: InstanceRecord = {
      id: String(i.name),
      name: labels[TAG_NODE_NAME] ?? String(i.name),
      kind: labels[TAG_NODE_KIND] === "head" ? "head" : "worker",
      nodeType: labels[TAG_NODE_TYPE] ?? "",
      state: STATE[String(i.status)] ?? "pending",
      zone: lastPart(i.zone),
      tags: labels,
    };
    if (privateIp) rec.privateIp = privateIp;
    if (publicIp) rec.publicIp = publicIp;
    if (host) rec.ssh = { host, port: 22, user: sshUser(this.config, "ubuntu") };
    return rec;
  }

  /** Every instance of the cluster (aggregated over all zones), by label. */
  private async listInstances(clusterName = this.cluster): Promise<any[]> {
    const filter = `labels.${gcpLabelKey(TAG_CLUSTER)} = "${gcpLabelValue(clusterName)}"`;
    try {
      return await this.call("instances.aggregatedList", async (c) => {
        const out: any[] = [];
        for await (const [, scoped] of c.instances.aggregatedListAsync({ project: this.project, filter, returnPartialSuccess: true }, { autoPaginate: false })) {
          for (const i of (scoped as any).instances ?? []) out.push(i);
        }
        return out;
      });
    } catch (e) {
      throw this.userError("instances.aggregatedList", e);
    }
  }

  async queryInstances(filter: QueryFilter): Promise<InstanceRecord[]> {
    const recs = (await this.listInstances(filter.clusterName)).map((i) => this.record(i)).filter((r) => !filter.kind || r.kind === filter.kind);
    return recs.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  }

  async waitInstances(ids: string[], state: InstanceState, timeoutMs = 600_000): Promise<InstanceRecord[]> {
    if (!ids.length) return [];
    let last: InstanceRecord[] = [];
    return pollUntil(
      async () => {
        const all = (await this.listInstances()).map((i) => this.record(i));
        last = all.filter((r) => ids.includes(r.id));
        if (state === "terminated") return last.length === 0 ? [] : undefined;
        const missing = ids.filter((id) => !last.some((r) => r.id === id));
        if (missing.length) throw new UserError(`GCP instance ${missing.join(", ")} disappeared while tray waited for it to be ${state} (preempted or deleted).`);
        const ready = last.every((r) => r.state === state && (state !== "running" || r.privateIp));
        return ready ? last : undefined;
      },
      timeoutMs,
      () => {
        const late = last.filter((r) => r.state !== state).map((r) => `${r.name} (${r.state})`);
        return new UserError(`GCP instances did not become ${state} within ${Math.round(timeoutMs / 1000)} s: ${late.join(", ") || ids.join(", ")}.`);
      },
    );
  }

  private async zonesOf(ids: string[]): Promise<Map<string, any>> {
    const all = await this.listInstances();
    return new Map(all.filter((i) => ids.includes(String(i.name))).map((i) => [String(i.name), i]));
  }

  async stopInstances(ids: string[]): Promise<void> {
    const found = await this.zonesOf(ids);
    await Promise.all(
      [...found.values()].map(async (i) => {
        const zone = lastPart(i.zone);
        try {
          const [op] = await this.call("instances.stop", (c) => c.instances.stop({ project: this.project, zone, instance: String(i.name) }));
          const err = await this.waitOp("instances.stop", op, zone);
          if (err) throw Object.assign(new Error(err.message), { errors: [err] });
        } catch (e) {
          throw this.userError(`instances.stop ${i.name}`, e);
        }
      }),
    );
  }

  async terminateInstances(ids: string[]): Promise<RemovedResource[]> {
    if (!ids.length) return [];
    const found = await this.zonesOf(ids);
    const removed: RemovedResource[] = [];
    await Promise.all(
      [...found.values()].map(async (i) => {
        const zone = lastPart(i.zone);
        try {
          const [op] = await this.call("instances.delete", (c) => c.instances.delete({ project: this.project, zone, instance: String(i.name) }));
          const err = await this.waitOp("instances.delete", op, zone);
          if (err) throw Object.assign(new Error(err.message), { errors: [err] });
        } catch (e) {
          if (classifyGcpError(e).cls !== "not-found") throw this.userError(`instances.delete ${i.name}`, e);
        }
        removed.push({ kind: "instance", id: `${i.name} (${zone})` });
        for (const d of i.disks ?? []) if (d.autoDelete) removed.push({ kind: "disk", id: `${lastPart(d.source)} (${zone})` });
      }),
    );
    return removed.sort((a, b) => a.kind.localeCompare(b.kind) || a.id.localeCompare(b.id));
  }

  async cleanup(): Promise<RemovedResource[]> {
    const removed: RemovedResource[] = [];
    // disks left behind (autoDelete false, or an instance deleted outside tray)
    const filter = `labels.${gcpLabelKey(TAG_CLUSTER)} = "${gcpLabelValue(this.cluster)}"`;
    const disks = await this.call("disks.aggregatedList", async (c) => {
      const out: any[] = [];
      for await (const [, scoped] of c.disks.aggregatedListAsync({ project: this.project, filter, returnPartialSuccess: true }, { autoPaginate: false })) {
        for (const d of (scoped as any).disks ?? []) out.push(d);
      }
      return out;
    }).catch((e) => {
      throw this.userError("disks.aggregatedList", e);
    });
    for (const d of disks) {
      if ((d.users ?? []).length) continue; // still attached to a live instance
      const zone = lastPart(d.zone);
      try {
        const [op] = await this.call("disks.delete", (c) => c.disks.delete({ project: this.project, zone, disk: String(d.name) }));
        const err = await this.waitOp("disks.delete", op, zone);
        if (err) throw Object.assign(new Error(err.message), { errors: [err] });
        removed.push({ kind: "disk", id: `${d.name} (${zone})` });
      } catch (e) {
        if (classifyGcpError(e).cls !== "not-found") throw this.userError(`disks.delete ${d.name}`, e);
      }
    }
    // firewall rules tray made for this cluster (names tray-<cluster>-*, marker in the description)
    const marker = `[${TAG_CLUSTER}=${this.cluster}]`;
    const prefix = gcpName(`tray-${this.cluster}`) + "-";
    const rules = await this.call("firewalls.list", async (c) => {
      const out: any[] = [];
      for await (const f of c.firewalls.listAsync({ project: this.project, filter: `name = "${prefix}.*"` }, { autoPaginate: false })) out.push(f);
      return out;
    }).catch((e) => {
      throw this.userError("firewalls.list", e);
    });
    for (const f of rules) {
      if (!String(f.name).startsWith(prefix) || !String(f.description ?? "").includes(marker)) continue;
      if (await this.deleteFirewall(String(f.name))) removed.push({ kind: "firewall-rule", id: String(f.name) });
    }
    return removed;
  }
}

export function createProvider(config: ProviderClusterConfig): Provider {
  return new GcpProvider(config);
}
