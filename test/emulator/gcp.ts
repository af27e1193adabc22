// Compute Engine emulator: the REST (v1, JSON) subset that @google-cloud/compute sends in
// fallback (HTTP/1.1) mode for tray, with zonal and global operations, plus an OAuth2 token
// endpoint so google-auth-library's real credential chain works (a service-account JSON
// whose token_uri points here, found through GOOGLE_APPLICATION_CREDENTIALS).
// Point tray at it with CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE=<url>/compute/v1/ (gcloud's own
// override variable).
import crypto from "node:crypto";
import fs from "node:fs";
import type http from "node:http";
import os from "node:os";
import path from "node:path";
import { EmulatorBase, emptyInventory, type EmulatorOptions, type Inventory } from "./common.js";
import type { Host } from "./hosts.js";

class GceError extends Error {
  constructor(
    public status: number,
    public reason: string,
    message: string,
    public grpcStatus = "INVALID_ARGUMENT",
  ) {
    super(message);
  }
}

interface GceOperation {
  id: string;
  name: string;
  zone?: string;
  operationType: string;
  targetLink: string;
  status: "PENDING" | "RUNNING" | "DONE";
  error?: { errors: { code: string; message: string }[] };
  httpErrorStatusCode?: number;
  httpErrorMessage?: string;
  done: Promise<void>;
}

interface GceInstance {
  id: string;
  name: string;
  zone: string;
  machineType: string;
  status: "PROVISIONING" | "STAGING" | "RUNNING" | "STOPPING" | "TERMINATED";
  labels: Record<string, string>;
  networkTags: string[];
  metadata: { key: string; value: string }[];
  disks: { boot: boolean; autoDelete: boolean; deviceName: string; source: string; diskName: string }[];
  external: boolean;
  scheduling: Record<string, unknown>;
  host?: Host;
  created: string;
}

interface GceDisk {
  id: string;
  name: string;
  zone: string;
  sizeGb: string;
  labels: Record<string, string>;
  users: string[];
  sourceImage: string;
}

interface GceFirewall {
  id: string;
  name: string;
  description: string;
  network: string;
  direction: string;
  priority: number;
  sourceRanges: string[];
  sourceTags: string[];
  targetTags: string[];
  allowed: { IPProtocol: string; ports?: string[] }[];
}

export interface GcpEmulatorOptions extends EmulatorOptions {
  project?: string;
  region?: string;
}

let idCounter = 1000000;
const nextId = () => String(++idCounter) + String(Math.floor(Math.random() * 1e9));

export class GcpEmulator extends EmulatorBase {
  readonly project: string;
  readonly region: string;
  readonly zones: string[];
  instances = new Map<string, GceInstance>(); // key zone/name
  disks = new Map<string, GceDisk>(); // key zone/name
  firewalls = new Map<string, GceFirewall>();
  operations = new Map<string, GceOperation>();
  private tokens = new Set<string>();
  private byRequestId = new Map<string, GceOperation>();
  private keyFile = "";

  constructor(opts: GcpEmulatorOptions = {}) {
    super(opts);
    this.project = opts.project ?? "tray-emulated";
    this.region = opts.region ?? "us-west1";
    this.zones = ["a", "b", "c"].map((z) => `${this.region}-${z}`);
  }

  override async start(): Promise<this> {
    await super.start();
    // Workload-identity-federation credentials ("external_account") whose token_url is this
    // emulator: google-auth-library's real ADC chain finds them via GOOGLE_APPLICATION_CREDENTIALS
    // and exchanges the subject token here (a service-account key would always call
    // oauth2.googleapis.com, whose address is fixed in gtoken).
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tray-gcp-emu-"));
    this.keyFile = path.join(dir, "credentials.json");
    fs.writeFileSync(path.join(dir, "subject-token"), "emulator-subject-token-" + crypto.randomBytes(8).toString("hex"));
    fs.writeFileSync(
      this.keyFile,
      JSON.stringify({
        type: "external_account",
        audience: "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/tray/providers/emulator",
        subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
        token_url: `${this.url}/token`,
        credential_source: { file: path.join(dir, "subject-token") },
      }),
      { mode: 0o600 },
    );
    return this;
  }

  override async stop(): Promise<void> {
    await super.stop();
    if (this.keyFile) fs.rmSync(path.dirname(this.keyFile), { recursive: true, force: true });
  }

  env(): Record<string, string> {
    return {
      CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: `${this.url}/compute/v1/`,
      GOOGLE_APPLICATION_CREDENTIALS: this.keyFile,
    };
  }

  private link(rest: string): string {
    return `https://www.googleapis.com/compute/v1/projects/${this.project}/${rest}`;
  }

  protected async handle(req: http.IncomingMessage, res: http.ServerResponse, body: string): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    const method = req.method ?? "GET";
    let action = `${method} ${url.pathname}`;
    const send = (status: number, obj: unknown) => {
      this.log.push({ method, path: url.pathname, action, status });
      res.writeHead(status, { "content-type": "application/json; charset=UTF-8" });
      res.end(JSON.stringify(obj));
    };
    const fail = (e: GceError) =>
      send(e.status, { error: { code: e.status, message: e.message, errors: [{ message: e.message, domain: "global", reason: e.reason }], status: e.grpcStatus } });
    try {
      if (url.pathname === "/token" && method === "POST") {
        const form = new URLSearchParams(body);
        if (form.get("grant_type") !== "urn:ietf:params:oauth:grant-type:token-exchange" || !form.get("subject_token")?.startsWith("emulator-subject-token-")) {
          return send(400, { error: "invalid_grant", error_description: "The subject token is invalid." });
        }
        const token = "ya29.emulator-" + crypto.randomBytes(12).toString("hex");
        this.tokens.add(token);
        return send(200, { access_token: token, issued_token_type: "urn:ietf:params:oauth:token-type:access_token", expires_in: 3600, token_type: "Bearer" });
      }
      const auth = String(req.headers.authorization ?? "");
      if (!this.tokens.has(auth.replace(/^Bearer /, ""))) {
        throw new GceError(401, "authError", "Request had invalid authentication credentials. Expected OAuth 2 access token.", "UNAUTHENTICATED");
      }
      const m = url.pathname.match(/^\/compute\/v1\/projects\/([^/]+)\/(.*)$/);
      if (!m) throw new GceError(404, "notFound", `The requested URL ${url.pathname} was not found.`, "NOT_FOUND");
      if (m[1] !== this.project) throw new GceError(403, "forbidden", `Required 'compute.instances.list' permission for 'projects/${m[1]}'`, "PERMISSION_DENIED");
      const rest = m[2]!;
      let r: RegExpMatchArray | null;
      const route = (name: string) => (action = name);
      const fault = () => {
        const f = this.takeFault(action);
        if (f === "throttle") {
          throw new GceError(429, "rateLimitExceeded", `Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' of service 'compute.googleapis.com' for consumer 'project_number:1'.`, "RESOURCE_EXHAUSTED");
        }
        if (f === "internal") throw new GceError(503, "backendError", "Internal error. Please try again or contact Google Support.", "UNAVAILABLE");
      };
      const json = () => (body ? JSON.parse(body) : {});
      if ((r = rest.match(/^zones\/([^/]+)\/instances$/))) {
        route(method === "POST" ? "instances.insert" : "instances.list");
        fault();
        const zone = this.zone(r[1]!);
        if (method === "POST") {
          // GCE de-duplicates a retried request by its requestId: the same operation comes back
          const rq = url.searchParams.get("requestId");
          const seen = rq ? this.byRequestId.get(rq) : undefined;
          if (seen) return send(200, this.opJson(seen));
          const op = this.insertInstance(zone, json());
          if (rq) this.byRequestId.set(rq, op);
          if (this.takeLostAnswer()) throw new GceError(503, "backendError", "Internal error. Please try again or contact Google Support.", "UNAVAILABLE");
          return send(200, this.opJson(op));
        }
        return send(200, { kind: "compute#instanceList", items: this.filterInstances(url.searchParams.get("filter")).filter((i) => i.zone === zone).map((i) => this.instanceJson(i)) });
      }
      if ((r = rest.match(/^zones\/([^/]+)\/instances\/([^/]+)(\/stop)?$/))) {
        const zone = this.zone(r[1]!);
        const inst = this.instances.get(`${zone}/${r[2]}`);
        route(r[3] ? "instances.stop" : method === "DELETE" ? "instances.delete" : "instances.get");
        fault();
        if (!inst) throw new GceError(404, "notFound", `The resource 'projects/${this.project}/zones/${zone}/instances/${r[2]}' was not found`, "NOT_FOUND");
        if (r[3]) return send(200, this.opJson(this.stopInstance(inst)));
        if (method === "DELETE") return send(200, this.opJson(this.deleteInstance(inst)));
        return send(200, this.instanceJson(inst));
      }
      if (rest === "aggregated/instances") {
        route("instances.aggregatedList");
        fault();
        const items: Record<string, unknown> = {};
        for (const z of this.zones) {
          const list = this.filterInstances(url.searchParams.get("filter")).filter((i) => i.zone === z);
          items[`zones/${z}`] = list.length
            ? { instances: list.map((i) => this.instanceJson(i)) }
            : { warning: { code: "NO_RESULTS_ON_PAGE", message: "There are no results for scope 'zones/" + z + "' on this page." } };
        }
        return send(200, { kind: "compute#instanceAggregatedList", items });
      }
      if (rest === "aggregated/disks") {
        route("disks.aggregatedList");
        fault();
        const f = parseLabelFilter(url.searchParams.get("filter"));
        const items: Record<string, unknown> = {};
        for (const z of this.zones) {
          const list = [...this.disks.values()].filter((d) => d.zone === z && f(d.labels));
          items[`zones/${z}`] = list.length ? { disks: list.map((d) => this.diskJson(d)) } : { warning: { code: "NO_RESULTS_ON_PAGE", message: "none" } };
        }
        return send(200, { kind: "compute#diskAggregatedList", items });
      }
      if ((r = rest.match(/^zones\/([^/]+)\/disks\/([^/]+)$/))) {
        route(method === "DELETE" ? "disks.delete" : "disks.get");
        fault();
        const zone = this.zone(r[1]!);
        const d = this.disks.get(`${zone}/${r[2]}`);
        if (!d) throw new GceError(404, "notFound", `The resource 'projects/${this.project}/zones/${zone}/disks/${r[2]}' was not found`, "NOT_FOUND");
        if (method === "GET") return send(200, this.diskJson(d));
        if (d.users.length) throw new GceError(400, "resourceInUseByAnotherResource", `The disk resource '${this.link(`zones/${zone}/disks/${d.name}`)}' is already being used by '${d.users[0]}'`, "FAILED_PRECONDITION");
        this.disks.delete(`${zone}/${d.name}`);
        return send(200, this.opJson(this.doneOp("delete", this.link(`zones/${zone}/disks/${d.name}`), zone)));
      }
      if (rest === "global/firewalls") {
        route(method === "POST" ? "firewalls.insert" : "firewalls.list");
        fault();
        if (method === "POST") return send(200, this.opJson(this.insertFirewall(json())));
        const filter = url.searchParams.get("filter");
        const nameEq = filter?.match(/name\s*=\s*"?([^"\s)]+)"?/)?.[1];
        const list = [...this.firewalls.values()].filter((f) => !nameEq || globMatch(nameEq, f.name));
        return send(200, { kind: "compute#firewallList", items: list.map((f) => this.firewallJson(f)) });
      }
      if ((r = rest.match(/^global\/firewalls\/([^/]+)$/))) {
        route(method === "DELETE" ? "firewalls.delete" : method === "PATCH" ? "firewalls.patch" : "firewalls.get");
        fault();
        const f = this.firewalls.get(r[1]!);
        if (!f) throw new GceError(404, "notFound", `The resource 'projects/${this.project}/global/firewalls/${r[1]}' was not found`, "NOT_FOUND");
        if (method === "GET") return send(200, this.firewallJson(f));
        if (method === "PATCH") {
          const b = json();
          for (const k of ["sourceRanges", "sourceTags", "targetTags", "allowed", "description"] as const) if (b[k] !== undefined) (f as any)[k] = b[k];
          return send(200, this.opJson(this.doneOp("patch", this.link(`global/firewalls/${f.name}`))));
        }
        this.firewalls.delete(f.name);
        return send(200, this.opJson(this.doneOp("delete", this.link(`global/firewalls/${f.name}`))));
      }
      if ((r = rest.match(/^(?:zones\/([^/]+)|global)\/operations\/([^/]+?)(\/wait)?$/))) {
        route(r[3] ? "operations.wait" : "operations.get");
        fault();
        const op = this.operations.get(r[2]!);
        if (!op) throw new GceError(404, "notFound", `The resource 'projects/${this.project}/${rest}' was not found`, "NOT_FOUND");
        if (r[3]) await Promise.race([op.done, new Promise((res) => setTimeout(res, 60_000))]);
        return send(200, this.opJson(op));
      }
      throw new GceError(404, "notFound", `emulator: no route for ${method} ${url.pathname}`, "NOT_FOUND");
    } catch (e) {
      if (e instanceof GceError) return fail(e);
      if (e instanceof SyntaxError) return fail(new GceError(400, "parseError", "Parse Error"));
      throw e;
    }
  }

  private zone(z: string): string {
    if (!this.zones.includes(z)) throw new GceError(404, "notFound", `The resource 'projects/${this.project}/zones/${z}' was not found`, "NOT_FOUND");
    return z;
  }

  private newOp(type: string, target: string, zone?: string): GceOperation & { finish: (err?: { code: string; message: string }) => void } {
    let finish!: () => void;
    const done = new Promise<void>((r) => (finish = r));
    const op: any = { id: nextId(), name: `operation-${Date.now()}-${crypto.randomBytes(6).toString("hex")}`, operationType: type, targetLink: target, status: "RUNNING", done };
    if (zone) op.zone = zone;
    op.finish = (err?: { code: string; message: string }) => {
      if (err) {
        op.error = { errors: [err] };
        op.httpErrorStatusCode = 400;
        op.httpErrorMessage = "BAD REQUEST";
      }
      op.status = "DONE";
      finish();
    };
    this.operations.set(op.name, op);
    return op;
  }

  private doneOp(type: string, target: string, zone?: string): GceOperation {
    const op = this.newOp(type, target, zone);
    op.finish();
    return op;
  }

  private opJson(op: GceOperation) {
    return {
      kind: "compute#operation",
      id: op.id,
      name: op.name,
      operationType: op.operationType,
      targetLink: op.targetLink,
      status: op.status,
      progress: op.status === "DONE" ? 100 : 0,
      insertTime: new Date().toISOString(),
      ...(op.zone ? { zone: this.link(`zones/${op.zone}`) } : {}),
      ...(op.error ? { error: op.error, httpErrorStatusCode: op.httpErrorStatusCode, httpErrorMessage: op.httpErrorMessage } : {}),
      selfLink: op.zone ? this.link(`zones/${op.zone}/operations/${op.name}`) : this.link(`global/operations/${op.name}`),
    };
  }

  private insertInstance(zone: string, b: any): GceOperation {
    const name = String(b.name ?? "");
    if (!/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/.test(name)) {
      throw new GceError(400, "invalid", `Invalid value for field 'resource.name': '${name}'. Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'`);
    }
    if (this.instances.has(`${zone}/${name}`)) {
      throw new GceError(409, "alreadyExists", `The resource 'projects/${this.project}/zones/${zone}/instances/${name}' already exists`, "ALREADY_EXISTS");
    }
    for (const [k, v] of Object.entries(b.labels ?? {})) {
      if (!/^[a-z][a-z0-9_-]{0,62}$/.test(k) || !/^[a-z0-9_-]{0,63}$/.test(String(v))) {
        throw new GceError(400, "invalid", `Invalid value for field 'resource.labels': '${k}=${v}'. Label keys and values may only contain lowercase letters, numbers, underscores and dashes.`);
      }
    }
    const cf = this.takeCreateFault();
    if (cf === "deny") throw new GceError(403, "forbidden", `Required 'compute.instances.create' permission for 'projects/${this.project}/zones/${zone}/instances/${name}'`, "PERMISSION_DENIED");
    const target = this.link(`zones/${zone}/instances/${name}`);
    const op = this.newOp("insert", target, zone);
    if (cf === "quota") {
      op.finish({ code: "QUOTA_EXCEEDED", message: `Quota 'CPUS' exceeded.  Limit: 24.0 in region ${zone.replace(/-[a-z]$/, "")}.` });
      return op;
    }
    if (this.zoneHasNoCapacity(zone)) {
      op.finish({
        code: "ZONE_RESOURCE_POOL_EXHAUSTED",
        message: `The zone 'projects/${this.project}/zones/${zone}' does not have enough resources available to fulfill the request. Try a different zone, or try again later.`,
      });
      return op;
    }
    const mt = String(b.machineType ?? "").split("/").pop() ?? "";
    const diskSpecs: any[] = b.disks ?? [];
    const disks: GceInstance["disks"] = [];
    for (const [i, d] of diskSpecs.entries()) {
      const dname = d.initializeParams?.diskName ?? (i === 0 ? name : `${name}-${i}`);
      const disk: GceDisk = {
        id: nextId(),
        name: dname,
        zone,
        sizeGb: String(d.initializeParams?.diskSizeGb ?? "10"),
        labels: d.initializeParams?.labels ?? {},
        users: [target],
        sourceImage: String(d.initializeParams?.sourceImage ?? ""),
      };
      this.disks.set(`${zone}/${dname}`, disk);
      disks.push({ boot: !!d.boot, autoDelete: d.autoDelete !== false, deviceName: d.deviceName ?? dname, source: this.link(`zones/${zone}/disks/${dname}`), diskName: dname });
    }
    const inst: GceInstance = {
      id: nextId(),
      name,
      zone,
      machineType: mt,
      status: "PROVISIONING",
      labels: b.labels ?? {},
      networkTags: b.tags?.items ?? [],
      metadata: b.metadata?.items ?? [],
      disks,
      external: (b.networkInterfaces?.[0]?.accessConfigs ?? []).length > 0,
      scheduling: b.scheduling ?? {},
      created: new Date().toISOString(),
    };
    this.instances.set(`${zone}/${name}`, inst);
    const keys = String(inst.metadata.find((m) => m.key === "ssh-keys")?.value ?? "")
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean)
      .map((l) => ({ user: l.slice(0, l.indexOf(":")), key: l.slice(l.indexOf(":") + 1) }));
    const user = keys[0]?.user || "ubuntu";
    const unreachable = this.takeUnreachable();
    op.finish();
    this.boot({ user, authorizedKeys: keys.filter((k) => k.user === user).map((k) => k.key), hostname: name, reachable: !unreachable }, (host) => {
      if (inst.status !== "PROVISIONING" || this.instances.get(`${zone}/${name}`) !== inst) return void this.destroyHost(host);
      inst.host = host;
      inst.status = host ? "RUNNING" : "TERMINATED";
    });
    return op;
  }

  private stopInstance(inst: GceInstance): GceOperation {
    const op = this.newOp("stop", this.link(`zones/${inst.zone}/instances/${inst.name}`), inst.zone);
    inst.status = "STOPPING";
    const host = inst.host;
    inst.host = undefined;
    this.track(
      this.destroyHost(host).then(() => {
        inst.status = "TERMINATED";
        op.finish();
      }),
    );
    return op;
  }

  private deleteInstance(inst: GceInstance): GceOperation {
    const op = this.newOp("delete", this.link(`zones/${inst.zone}/instances/${inst.name}`), inst.zone);
    inst.status = "STOPPING";
    const host = inst.host;
    inst.host = undefined;
    this.track(
      this.destroyHost(host).then(() => {
        this.instances.delete(`${inst.zone}/${inst.name}`);
        for (const d of inst.disks) {
          const disk = this.disks.get(`${inst.zone}/${d.diskName}`);
          if (!disk) continue;
          if (d.autoDelete) this.disks.delete(`${inst.zone}/${d.diskName}`);
          else disk.users = [];
        }
        op.finish();
      }),
    );
    return op;
  }

  private filterInstances(filter: string | null): GceInstance[] {
    const f = parseLabelFilter(filter);
    return [...this.instances.values()].filter((i) => f(i.labels));
  }

  private instanceJson(i: GceInstance) {
    return {
      kind: "compute#instance",
      id: i.id,
      name: i.name,
      zone: this.link(`zones/${i.zone}`),
      machineType: this.link(`zones/${i.zone}/machineTypes/${i.machineType}`),
      status: i.status,
      labels: i.labels,
      tags: { items: i.networkTags, fingerprint: "abc=" },
      metadata: { items: i.metadata, fingerprint: "def=" },
      creationTimestamp: i.created,
      scheduling: i.scheduling,
      networkInterfaces: [
        {
          name: "nic0",
          network: this.link("global/networks/default"),
          ...(i.host ? { networkIP: i.host.privateIp } : {}),
          accessConfigs: i.external ? [{ type: "ONE_TO_ONE_NAT", name: "External NAT", ...(i.host ? { natIP: i.host.publicIp } : {}) }] : [],
        },
      ],
      disks: i.disks.map((d, n) => ({ index: n, boot: d.boot, autoDelete: d.autoDelete, deviceName: d.deviceName, source: d.source, type: "PERSISTENT", mode: "READ_WRITE" })),
      selfLink: this.link(`zones/${i.zone}/instances/${i.name}`),
    };
  }

  private diskJson(d: GceDisk) {
    return {
      kind: "compute#disk",
      id: d.id,
      name: d.name,
      zone: this.link(`zones/${d.zone}`),
      sizeGb: d.sizeGb,
      labels: d.labels,
      users: d.users,
      status: "READY",
      sourceImage: d.sourceImage,
      selfLink: this.link(`zones/${d.zone}/disks/${d.name}`),
    };
  }

  private insertFirewall(b: any): GceOperation {
    const name = String(b.name ?? "");
    if (this.firewalls.has(name)) {
      throw new GceError(409, "alreadyExists", `The resource 'projects/${this.project}/global/firewalls/${name}' already exists`, "ALREADY_EXISTS");
    }
    this.firewalls.set(name, {
      id: nextId(),
      name,
      description: String(b.description ?? ""),
      network: String(b.network ?? "global/networks/default"),
      direction: String(b.direction ?? "INGRESS"),
      priority: Number(b.priority ?? 1000),
      sourceRanges: b.sourceRanges ?? [],
      sourceTags: b.sourceTags ?? [],
      targetTags: b.targetTags ?? [],
      allowed: b.allowed ?? [],
    });
    return this.doneOp("insert", this.link(`global/firewalls/${name}`));
  }

  private firewallJson(f: GceFirewall) {
    return {
      kind: "compute#firewall",
      id: f.id,
      name: f.name,
      description: f.description,
      network: this.link("global/networks/default"),
      direction: f.direction,
      priority: f.priority,
      sourceRanges: f.sourceRanges,
      sourceTags: f.sourceTags,
      targetTags: f.targetTags,
      allowed: f.allowed,
      selfLink: this.link(`global/firewalls/${f.name}`),
    };
  }

  inventory(cluster: string): Inventory {
    const inv = emptyInventory();
    const mine = (l: Record<string, string>) => l["tray-cluster-name"] === cluster;
    for (const i of this.instances.values()) {
      if (!mine(i.labels)) continue;
      inv.instances.push(i.name);
      if (i.host && i.external) inv.publicIps.push(i.host.publicIp);
    }
    for (const d of this.disks.values()) if (mine(d.labels)) inv.disks.push(d.name);
    for (const f of this.firewalls.values()) if (f.description.includes(`tray-cluster-name=${cluster}]`)) inv.firewallRules.push(f.name);
    return inv;
  }
}

function globMatch(pattern: string, s: string): boolean {
  return new RegExp("^" + pattern.split(".*").map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*") + "$").test(s);
}

/** Supports what tray sends: `labels.KEY = "VALUE"` terms, optionally parenthesized and joined by AND. */
export function parseLabelFilter(filter: string | null): (labels: Record<string, string>) => boolean {
  if (!filter) return () => true;
  const terms = [...filter.matchAll(/labels\.([a-z0-9_-]+)\s*=\s*"?([^"\s)]*)"?/g)].map((m) => [m[1]!, m[2]!] as const);
  if (!terms.length) throw new GceError(400, "invalid", `Invalid list filter expression '${filter}'.`);
  return (labels) => terms.every(([k, v]) => labels[k] === v);
}
