// Placement groups, as in Ray. The head keeps the table: for each group it picks a node per
// bundle from its view according to the strategy (pure: `placeBundles`), then reserves every
// bundle atomically in two phases (prepare on all nodes → commit, or cancel those prepared).
// A node that commits a bundle exposes its resources under group names
// (`CPU_group_<pg>_<i>`, `CPU_group_<pg>` for "any bundle", and a `bundle_group_<pg>_<i>` marker),
// and a task or actor placed with `{ placementGroup, bundleIndex }` has its demand rewritten to
// them (`rewriteDemand`), so ordinary scheduling sends it to the bundle's node.
import { add, describe, fits, subtract, type Resources } from "./resources.js";

export type PgStrategy = "PACK" | "SPREAD" | "STRICT_PACK" | "STRICT_SPREAD";
export const PG_STRATEGIES: readonly PgStrategy[] = ["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"];

/** Units of the per-bundle marker resource; every task in a bundle takes MARKER_DEMAND of it. */
const MARKER = 1000;
const MARKER_DEMAND = 0.001;

export interface PgNode {
  nodeId: string;
  name?: string;
  resources: Resources;
}

/**
 * A node for each bundle, or why it cannot be done on these nodes (pure). `resources` is what
 * each node has free (to place now) or in total (to tell whether it could ever be placed).
 */
export function placeBundles(nodes: PgNode[], bundles: Resources[], strategy: PgStrategy): { nodes: string[] } | { error: string } {
  const left = new Map(nodes.map((n) => [n.nodeId, { ...n.resources }]));
  const order = [...nodes].sort((a, b) => (b.resources.CPU ?? 0) - (a.resources.CPU ?? 0) || a.nodeId.localeCompare(b.nodeId));
  const sum: Resources = {};
  for (const b of bundles) add(sum, b);
  if (strategy === "STRICT_PACK" || strategy === "PACK") {
    const one = order.find((n) => fits(n.resources, sum));
    if (one) return { nodes: bundles.map(() => one.nodeId) };
    if (strategy === "STRICT_PACK") return { error: `STRICT_PACK needs one node with ${describe(sum)} for all ${bundles.length} bundles, and no node has that` };
  }
  const out: string[] = [];
  const used: string[] = [];
  for (let i = 0; i < bundles.length; i++) {
    const b = bundles[i]!;
    const fitting = order.filter((n) => fits(left.get(n.nodeId)!, b));
    let pick: string | undefined;
    if (strategy === "PACK") pick = used.find((id) => fitting.some((n) => n.nodeId === id)) ?? fitting[0]?.nodeId;
    else {
      pick = fitting.find((n) => !used.includes(n.nodeId))?.nodeId;
      if (!pick && strategy === "SPREAD") pick = fitting[0]?.nodeId;
    }
    if (!pick) {
      if (strategy === "STRICT_SPREAD") {
        const can = nodes.filter((n) => bundles.some((x) => fits(n.resources, x))).length;
        return { error: `STRICT_SPREAD needs ${bundles.length} different nodes, one per bundle, and only ${can} node(s) can hold a bundle` };
      }
      return { error: `bundle ${i} ${describe(b)} does not fit on any node` };
    }
    subtract(left.get(pick)!, b);
    out.push(pick);
    if (!used.includes(pick)) used.push(pick);
  }
  return { nodes: out };
}

/** The resources a committed bundle adds to its node. */
export function bundleResources(pg: string, i: number, b: Resources): Resources {
  const r: Resources = {};
  for (const [k, v] of Object.entries(b)) {
    if (!(v > 0)) continue;
    r[`${k}_group_${pg}_${i}`] = v;
    r[`${k}_group_${pg}`] = v;
  }
  r[`bundle_group_${pg}_${i}`] = MARKER;
  r[`bundle_group_${pg}`] = MARKER;
  return r;
}

/** Rewrite a demand in place to the resources of a group's bundle (idempotent). */
export function rewriteDemand(res: Resources, pg: string, bundleIndex: number): void {
  const suffix = bundleIndex >= 0 ? `_${bundleIndex}` : "";
  const marker = `bundle_group_${pg}${suffix}`;
  if (marker in res) return;
  for (const k of Object.keys(res)) {
    if (k.includes("_group_")) continue;
    const v = res[k]!;
    delete res[k];
    if (v > 0) res[`${k}_group_${pg}${suffix}`] = v;
  }
  res[marker] = MARKER_DEMAND;
}

/** Node side: bundles reserved here (prepared, then committed), by "<pg>/<i>". */
export class BundleReservations {
  private readonly prepared = new Map<string, Resources>();
  private readonly committed = new Map<string, Resources>();

  constructor(
    private readonly total: Resources,
    private readonly available: Resources,
  ) {}

  prepare(pg: string, i: number, b: Resources): boolean {
    const key = `${pg}/${i}`;
    if (this.prepared.has(key) || this.committed.has(key)) return true;
    if (!fits(this.available, b)) return false;
    subtract(this.available, b);
    this.prepared.set(key, b);
    return true;
  }

  commit(pg: string, i: number): boolean {
    const key = `${pg}/${i}`;
    const b = this.prepared.get(key);
    if (!b) return this.committed.has(key);
    this.prepared.delete(key);
    this.committed.set(key, b);
    const r = bundleResources(pg, i, b);
    add(this.total, r);
    add(this.available, r);
    return true;
  }

  /** Give a bundle back (prepared or committed). */
  release(pg: string, i: number): void {
    const key = `${pg}/${i}`;
    const p = this.prepared.get(key);
    if (p) {
      this.prepared.delete(key);
      add(this.available, p);
      return;
    }
    const b = this.committed.get(key);
    if (!b) return;
    this.committed.delete(key);
    const r = bundleResources(pg, i, b);
    subtract(this.total, r);
    subtract(this.available, r);
    for (const k of Object.keys(r)) {
      if ((this.total[k] ?? 0) <= 1e-9) {
        delete this.total[k];
        delete this.available[k];
      }
    }
    add(this.available, b);
  }

  /** Every bundle of a group (the group was removed). */
  releaseGroup(pg: string): void {
    for (const key of [...this.prepared.keys(), ...this.committed.keys()]) {
      const [g, i] = key.split("/");
      if (g === pg) this.release(g, Number(i));
    }
  }
}

export interface PgRecord {
  id: string;
  name?: string;
  job: string;
  strategy: PgStrategy;
  bundles: Resources[];
  state: "PENDING" | "CREATED" | "REMOVED";
  /** Node of each bundle once created. */
  nodes?: string[];
  /** Why it is still pending. */
  reason?: string;
  infeasibleSince?: number;
  createdAt: number;
}

/** Head side: the placement-group table and the two-phase reservation. */
export class PlacementGroups {
  readonly groups = new Map<string, PgRecord>();
  private readonly waiters = new Map<string, Array<{ resolve: () => void; reject: (e: { kind: string; message: string }) => void }>>();
  private busy = false;
  private again = false;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly io: {
      /** Alive nodes with their free and total resources. */
      nodes(): Array<{ nodeId: string; name: string; available: Resources; total: Resources }>;
      prepare(node: string, pg: string, i: number, b: Resources): Promise<boolean>;
      commit(node: string, pg: string, i: number): Promise<boolean>;
      /** Give a bundle back; resolves once the node has (its figures in the view are then exact). */
      release(node: string, pg: string, i: number): Promise<void>;
      /** Resources changed on these nodes (update the view now rather than at the next heartbeat). */
      changed(nodes: string[]): void;
    },
    private readonly infeasibleGraceMs: number,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.schedule(), 500);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  create(rec: Omit<PgRecord, "state" | "createdAt">): { error?: string } {
    if (this.groups.has(rec.id)) return {};
    if (rec.name && [...this.groups.values()].some((g) => g.name === rec.name && g.state !== "REMOVED")) {
      return { error: `a placement group named "${rec.name}" already exists` };
    }
    this.groups.set(rec.id, { ...rec, state: "PENDING", createdAt: Date.now() });
    this.schedule();
    return {};
  }

  /** Resolves once the group is created; rejects if it is removed or can never be placed. */
  wait(id: string): Promise<void> {
    const g = this.groups.get(id);
    if (!g) return Promise.reject({ kind: "TaskError", causeName: "ValueError", message: `no placement group ${id}` });
    if (g.state === "CREATED") return Promise.resolve();
    if (g.state === "REMOVED") return Promise.reject({ kind: "TaskError", causeName: "ValueError", message: `placement group ${id} was removed` });
    return new Promise((resolve, reject) => {
      let ws = this.waiters.get(id);
      if (!ws) this.waiters.set(id, (ws = []));
      ws.push({ resolve, reject });
    });
  }

  async remove(id: string): Promise<void> {
    const g = this.groups.get(id);
    if (!g || g.state === "REMOVED") return;
    const nodes = g.nodes ?? [];
    g.state = "REMOVED";
    this.settle(id, { kind: "TaskError", causeName: "ValueError", message: `placement group ${id} was removed before it was ready` });
    await Promise.all(nodes.map((n, i) => this.io.release(n, id, i).catch(() => {})));
    this.io.changed(nodes);
    this.schedule();
  }

  /** A job ended: its groups go with it. */
  removeJob(job: string): void {
    for (const g of this.groups.values()) if (g.job === job && g.state !== "REMOVED") void this.remove(g.id);
  }

  /** A node died: groups with a bundle there give back the others and are placed again. */
  nodeDied(nodeId: string): void {
    for (const g of this.groups.values()) {
      if (g.state !== "CREATED" || !g.nodes?.includes(nodeId)) continue;
      g.nodes.forEach((n, i) => n !== nodeId && void this.io.release(n, g.id, i).catch(() => {}));
      g.state = "PENDING";
      g.reason = `rescheduling: node ${nodeId.slice(0, 8)} holding a bundle died`;
      g.nodes = undefined;
    }
    this.schedule();
  }

  list(): PgRecord[] {
    return [...this.groups.values()].filter((g) => g.state !== "REMOVED");
  }

  private settle(id: string, err?: { kind: string; message: string; causeName?: string }): void {
    const ws = this.waiters.get(id);
    if (!ws) return;
    this.waiters.delete(id);
    for (const w of ws) (err ? w.reject(err) : w.resolve());
  }

  /** Try to place pending groups, oldest first, one at a time. */
  schedule(): void {
    if (this.busy) {
      this.again = true;
      return;
    }
    const pending = [...this.groups.values()].filter((g) => g.state === "PENDING").sort((a, b) => a.createdAt - b.createdAt);
    if (!pending.length) return;
    this.busy = true;
    void (async () => {
      try {
        for (const g of pending) await this.tryPlace(g);
      } finally {
        this.busy = false;
        if (this.again) {
          this.again = false;
          this.schedule();
        }
      }
    })();
  }

  private async tryPlace(g: PgRecord): Promise<void> {
    if (g.state !== "PENDING") return;
    const nodes = this.io.nodes();
    const ever = placeBundles(nodes.map((n) => ({ nodeId: n.nodeId, resources: n.total })), g.bundles, g.strategy);
    if ("error" in ever) {
      g.reason = `infeasible: ${ever.error}`;
      g.infeasibleSince ??= Date.now();
      if (Date.now() - g.infeasibleSince >= this.infeasibleGraceMs) {
        this.settle(g.id, { kind: "InfeasibleTaskError", message: `placement group ${g.name ? `"${g.name}" ` : ""}${g.id} (${g.strategy}, ${g.bundles.length} bundles) cannot be placed: ${ever.error}` });
      }
      return;
    }
    g.infeasibleSince = undefined;
    const now = placeBundles(nodes.map((n) => ({ nodeId: n.nodeId, resources: n.available })), g.bundles, g.strategy);
    if ("error" in now) {
      g.reason = `waiting for resources: ${now.error}`;
      return;
    }
    // Phase 1: every node reserves its bundle; any refusal rolls all of them back.
    const ok = await Promise.all(now.nodes.map((n, i) => this.io.prepare(n, g.id, i, g.bundles[i]!).catch(() => false)));
    if ((g.state as string) === "REMOVED" || ok.some((x) => !x)) {
      await Promise.all(now.nodes.map((n, i) => (ok[i] ? this.io.release(n, g.id, i).catch(() => {}) : undefined)));
      if ((g.state as string) !== "REMOVED") g.reason = "waiting for resources: a node could not reserve its bundle";
      return;
    }
    // Phase 2: commit everywhere (a node that died in between fails the commit: roll back).
    const done = await Promise.all(now.nodes.map((n, i) => this.io.commit(n, g.id, i).catch(() => false)));
    if ((g.state as string) === "REMOVED" || done.some((x) => !x)) {
      await Promise.all(now.nodes.map((n, i) => this.io.release(n, g.id, i).catch(() => {})));
      if ((g.state as string) !== "REMOVED") g.reason = "waiting for resources: a node failed while the group was reserved";
      return;
    }
    g.state = "CREATED";
    g.nodes = now.nodes;
    g.reason = undefined;
    this.io.changed(now.nodes);
    this.settle(g.id);
  }
}
