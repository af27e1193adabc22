// Placement groups in a job: reserve bundles of resources across the cluster, then place
// tasks and actors into them with schedulingStrategy { placementGroup: pg, bundleIndex }.
import crypto from "node:crypto";
import { apiCore, getCore } from "./context.js";

export type PlacementStrategy = "PACK" | "SPREAD" | "STRICT_PACK" | "STRICT_SPREAD";
const STRATEGIES: readonly string[] = ["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"];

const creations = new WeakMap<PlacementGroup, Promise<unknown>>();

/** A reservation of bundles; travels in options as `{ id }` (methods are not sent). */
export class PlacementGroup {
  constructor(
    readonly id: string,
    readonly bundleSpecs: Array<Record<string, number>>,
    readonly strategy: PlacementStrategy,
    readonly name?: string,
  ) {}

  /** Resolves once every bundle is reserved; rejects if the group can never be placed or was removed. */
  ready(): Promise<void> {
    const created = creations.get(this) ?? Promise.resolve();
    return created.then(() => getCore().request<void>({ t: "pg", op: "wait", id: this.id })).then(() => undefined);
  }

  get bundleCount(): number {
    return this.bundleSpecs.length;
  }
}

/** Reserve `bundles` with `strategy` (PACK by default); `await pg.ready()` before relying on it. */
export function placementGroup(bundles: Array<Record<string, number>>, opts: { strategy?: PlacementStrategy; name?: string } = {}): PlacementGroup {
  const strategy = opts.strategy ?? "PACK";
  if (!STRATEGIES.includes(strategy)) throw new TypeError(`placementGroup strategy must be one of ${STRATEGIES.join(", ")}, got ${JSON.stringify(strategy)}`);
  if (!Array.isArray(bundles) || bundles.length === 0) throw new TypeError("placementGroup needs a non-empty array of bundles, e.g. [{ CPU: 1 }, { CPU: 1 }]");
  bundles.forEach((b, i) => {
    if (typeof b !== "object" || b === null || Array.isArray(b)) throw new TypeError(`bundle ${i} must be an object of resources, e.g. { CPU: 1 }`);
    const entries = Object.entries(b);
    if (!entries.length || !entries.some(([, v]) => v > 0)) throw new TypeError(`bundle ${i} must ask for some resource, e.g. { CPU: 1 }`);
    for (const [k, v] of entries) {
      if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw new TypeError(`bundle ${i}: resource ${k} must be a finite number >= 0, got ${JSON.stringify(v)}`);
    }
  });
  if (opts.name !== undefined && (typeof opts.name !== "string" || !opts.name)) throw new TypeError("placementGroup name must be a non-empty string");
  const id = `pg${crypto.randomBytes(6).toString("hex")}`;
  const specs = bundles.map((b) => ({ ...b }));
  const core = apiCore("placementGroup()");
  // Sent now; ready() asks afterwards on the same connection, so it always finds the group.
  const created = core.request({ t: "pg", op: "create", id, bundles: specs, strategy, ...(opts.name ? { name: opts.name } : {}) });
  created.catch(() => {});
  const pg = new PlacementGroup(id, specs, strategy, opts.name);
  creations.set(pg, created);
  return pg;
}

/** Give a group's bundles back; tasks placed in it can no longer be scheduled. */
export function removePlacementGroup(pg: PlacementGroup): Promise<void> {
  return getCore().request<void>({ t: "pg", op: "remove", id: pg.id }).then(() => undefined);
}
