// Resource arithmetic of one node (pure: unit-tested). Amounts are kept in 1/10000 units so
// fractional GPUs (0.25 + 0.25 + 0.5) add up exactly.
export type Resources = Record<string, number>;

const SCALE = 10000;
const q = (x: number) => Math.round(x * SCALE);

export function fits(available: Resources, demand: Resources): boolean {
  for (const k in demand) {
    if (q(available[k] ?? 0) < q(demand[k]!)) return false;
  }
  return true;
}

/** Could this demand ever fit a node with these totals? */
export function feasible(total: Resources, demand: Resources): boolean {
  return fits(total, demand);
}

export function subtract(available: Resources, demand: Resources): void {
  for (const k in demand) available[k] = (q(available[k] ?? 0) - q(demand[k]!)) / SCALE;
}

export function add(available: Resources, demand: Resources): void {
  for (const k in demand) available[k] = (q(available[k] ?? 0) + q(demand[k]!)) / SCALE;
}

/** Text for a demand, as users write it: "{CPU: 4, GPU: 1}". */
export function describe(r: Resources): string {
  return "{" + Object.entries(r).map(([k, v]) => `${k}: ${v}`).join(", ") + "}";
}

/**
 * GPU ids for a demand of `n` GPUs given each GPU's free fraction. Whole GPUs for n >= 1
 * (lowest ids first); for a fraction, the fullest GPU that still has room (packs fractional
 * users together and keeps whole GPUs free). Returns undefined when it does not fit.
 */
export function pickGpus(free: number[], n: number): number[] | undefined {
  if (n <= 0) return [];
  if (n >= 1) {
    const ids = free.map((f, i) => [f, i] as const).filter(([f]) => q(f) === SCALE).map(([, i]) => i);
    return ids.length >= n ? ids.slice(0, n) : undefined;
  }
  let best = -1;
  for (let i = 0; i < free.length; i++) {
    if (q(free[i]!) >= q(n) && (best < 0 || free[i]! < free[best]!)) best = i;
  }
  return best < 0 ? undefined : [best];
}

export function takeGpus(free: number[], ids: number[], n: number): void {
  const each = n >= 1 ? 1 : n;
  for (const i of ids) free[i] = (q(free[i]!) - q(each)) / SCALE;
}

export function returnGpus(free: number[], ids: number[], n: number): void {
  const each = n >= 1 ? 1 : n;
  for (const i of ids) free[i] = (q(free[i]!) + q(each)) / SCALE;
}
