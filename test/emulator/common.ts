// Shared parts of the three cloud emulators: the HTTP(S) server, failure injection, the
// pool of real namespaced sshd hosts that back instances, and the inventory a test checks
// after `tray down` ("the emulator holds nothing of the cluster").
import crypto from "node:crypto";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { HostPool, type Host, type HostSpec } from "./hosts.js";

export interface Faults {
  /** The next N API requests (optionally only those whose action is listed) answer "throttled". */
  throttle?: number;
  throttleActions?: string[];
  /** Zones that answer every instance create with the cloud's capacity error. */
  noCapacityZones?: string[];
  /** The next N instances created are running in the cloud's eyes but never answer on port 22. */
  unreachable?: number;
  /** The next N API requests answer with a 5xx internal error. */
  internalErrors?: number;
  /** The next N instance creates are carried out, but their answer is lost (a 5xx comes back instead). */
  lostCreateAnswers?: number;
  /** The next N instance creates answer with the cloud's "permission denied" error. */
  denyCreates?: number;
  /** The next N instance creates answer with the cloud's "quota exceeded" error. */
  quotaCreates?: number;
}

export interface FaultStats {
  throttled: number;
  internalErrors: number;
  capacityErrors: number;
}

/** What the emulator holds of one cluster, by kind; empty arrays everywhere after `tray down`. */
export interface Inventory {
  instances: string[];
  securityGroups: string[];
  firewallRules: string[];
  nics: string[];
  publicIps: string[];
  disks: string[];
  keyPairs: string[];
  networks: string[];
}

export function emptyInventory(): Inventory {
  return { instances: [], securityGroups: [], firewallRules: [], nics: [], publicIps: [], disks: [], keyPairs: [], networks: [] };
}

export interface RequestLogEntry {
  method: string;
  path: string;
  action: string;
  status: number;
}

export interface EmulatorOptions {
  /** https with this certificate (Azure); plain http otherwise. */
  tls?: { key: string; cert: string };
  faults?: Faults;
  /** Delay before a created instance turns "running" (ms, default 300). */
  bootDelayMs?: number;
}

export abstract class EmulatorBase {
  readonly pool = new HostPool();
  faults: Faults;
  readonly stats: FaultStats = { throttled: 0, internalErrors: 0, capacityErrors: 0 };
  readonly log: RequestLogEntry[] = [];
  protected server?: http.Server;
  protected bootDelayMs: number;
  url = "";
  port = 0;
  private pending = new Set<Promise<unknown>>();

  constructor(protected opts: EmulatorOptions = {}) {
    this.faults = { ...(opts.faults ?? {}) };
    this.bootDelayMs = opts.bootDelayMs ?? 300;
  }

  async start(): Promise<this> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on("data", (c) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8");
        Promise.resolve()
          .then(() => this.handle(req, res, body))
          .catch((e) => {
            console.error("emulator: internal bug:", e);
            if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
            res.end(String(e?.stack ?? e));
          });
      });
    };
    this.server = this.opts.tls ? https.createServer({ key: this.opts.tls.key, cert: this.opts.tls.cert }, handler) : http.createServer(handler);
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as AddressInfo).port;
    this.url = `${this.opts.tls ? "https" : "http"}://127.0.0.1:${this.port}`;
    return this;
  }

  async stop(): Promise<void> {
    await Promise.allSettled([...this.pending]);
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.server?.closeAllConnections?.();
    await this.pool.destroyAll();
  }

  protected abstract handle(req: http.IncomingMessage, res: http.ServerResponse, body: string): Promise<void> | void;

  /** The inventory of one cluster (by its tag/label), for the "nothing left" assertion. */
  abstract inventory(clusterName: string): Inventory;

  /** Consume one injected fault for this action: "throttle" | "internal" | undefined. */
  protected takeFault(action: string): "throttle" | "internal" | undefined {
    const f = this.faults;
    if (f.throttle && f.throttle > 0 && (!f.throttleActions || f.throttleActions.includes(action))) {
      f.throttle--;
      this.stats.throttled++;
      return "throttle";
    }
    if (f.internalErrors && f.internalErrors > 0) {
      f.internalErrors--;
      this.stats.internalErrors++;
      return "internal";
    }
    return undefined;
  }

  protected zoneHasNoCapacity(zone: string): boolean {
    const hit = (this.faults.noCapacityZones ?? []).includes(zone);
    if (hit) this.stats.capacityErrors++;
    return hit;
  }

  /** For an instance create: "deny" | "quota" | undefined (consumes one injected fault). */
  protected takeCreateFault(): "deny" | "quota" | undefined {
    if (this.faults.denyCreates && this.faults.denyCreates > 0) {
      this.faults.denyCreates--;
      return "deny";
    }
    if (this.faults.quotaCreates && this.faults.quotaCreates > 0) {
      this.faults.quotaCreates--;
      return "quota";
    }
    return undefined;
  }

  protected takeLostAnswer(): boolean {
    if (this.faults.lostCreateAnswers && this.faults.lostCreateAnswers > 0) {
      this.faults.lostCreateAnswers--;
      this.stats.internalErrors++;
      return true;
    }
    return false;
  }

  protected takeUnreachable(): boolean {
    if (this.faults.unreachable && this.faults.unreachable > 0) {
      this.faults.unreachable--;
      return true;
    }
    return false;
  }

  /** Boot a real host in the background; `done` gets it (or the error) when ready. */
  protected boot(spec: HostSpec, done: (host: Host | undefined, err?: unknown) => void): void {
    const p = (async () => {
      await new Promise((r) => setTimeout(r, this.bootDelayMs));
      try {
        done(await this.pool.create(spec));
      } catch (e) {
        console.error("emulator: host creation failed:", e);
        done(undefined, e);
      }
    })();
    this.track(p);
  }

  protected track(p: Promise<unknown>): void {
    this.pending.add(p);
    p.finally(() => this.pending.delete(p));
  }

  protected destroyHost(host: Host | undefined): Promise<void> {
    if (!host) return Promise.resolve();
    const p = this.pool.destroy(host).catch((e) => console.error("emulator: host removal failed:", e));
    this.track(p);
    return p;
  }

  /** Wait until background host work (boots, removals) is done. */
  async settle(): Promise<void> {
    while (this.pending.size) await Promise.allSettled([...this.pending]);
  }
}

export function rid(prefix: string, len = 17): string {
  return prefix + crypto.randomBytes(16).toString("hex").slice(0, len);
}

export function uuid(): string {
  return crypto.randomUUID();
}
