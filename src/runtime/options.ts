// Options of remote functions and actors, validated up front with exact messages, and their
// normalised wire form.

export type SchedulingStrategy =
  | "DEFAULT"
  | "SPREAD"
  | { nodeId: string; soft?: boolean }
  | { placementGroup: { id: string }; bundleIndex?: number };

export interface RemoteOptions {
  numCpus?: number;
  numGpus?: number;
  /** bytes */
  memory?: number;
  resources?: Record<string, number>;
  maxRetries?: number;
  retryExceptions?: boolean;
  maxRestarts?: number;
  maxTaskRetries?: number;
  maxConcurrency?: number;
  name?: string;
  namespace?: string;
  lifetime?: "detached";
  getIfExists?: boolean;
  schedulingStrategy?: SchedulingStrategy;
  runtimeEnv?: { env?: Record<string, string> };
}

const known = new Set([
  "numCpus", "numGpus", "memory", "resources", "maxRetries", "retryExceptions", "maxRestarts", "maxTaskRetries",
  "maxConcurrency", "name", "namespace", "lifetime", "getIfExists", "schedulingStrategy", "runtimeEnv",
]);

function nonNegative(o: RemoteOptions, k: keyof RemoteOptions): void {
  const v = o[k];
  if (v !== undefined && (typeof v !== "number" || !Number.isFinite(v) || v < 0)) {
    throw new TypeError(`remote() option ${k} must be a non-negative number, got ${JSON.stringify(v)}`);
  }
}

export function validateOptions(o: RemoteOptions | undefined, kind: "task" | "actor"): RemoteOptions {
  if (o === undefined) return {};
  if (typeof o !== "object" || o === null) throw new TypeError("remote() options must be an object");
  for (const k of Object.keys(o)) {
    if (!known.has(k)) throw new TypeError(`remote() has no option "${k}" (known: ${[...known].join(", ")})`);
  }
  for (const k of ["numCpus", "numGpus", "memory", "maxConcurrency"] as const) nonNegative(o, k);
  for (const k of ["maxRetries", "maxRestarts", "maxTaskRetries"] as const) {
    const v = o[k];
    if (v !== undefined && (typeof v !== "number" || !(Number.isInteger(v) && v >= -1))) {
      throw new TypeError(`remote() option ${k} must be an integer >= 0 (or -1 for unlimited), got ${JSON.stringify(v)}`);
    }
  }
  if (o.numGpus !== undefined && o.numGpus > 1 && !Number.isInteger(o.numGpus)) {
    throw new TypeError(`remote() option numGpus must be a whole number when above 1, got ${o.numGpus}`);
  }
  if (o.resources !== undefined) {
    if (typeof o.resources !== "object" || o.resources === null || Array.isArray(o.resources)) {
      throw new TypeError(`remote() option resources must be an object of { name: amount }, got ${JSON.stringify(o.resources)}`);
    }
    for (const [k, v] of Object.entries(o.resources)) {
      if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw new TypeError(`remote() option resources.${k} must be a non-negative number`);
      if (k === "CPU" || k === "GPU") throw new TypeError(`use numCpus/numGpus instead of resources.${k}`);
    }
  }
  if (o.maxConcurrency !== undefined && (!Number.isInteger(o.maxConcurrency) || o.maxConcurrency < 1)) {
    throw new TypeError(`remote() option maxConcurrency must be an integer >= 1, got ${o.maxConcurrency}`);
  }
  if (kind === "task") {
    for (const k of ["maxRestarts", "maxTaskRetries", "maxConcurrency", "name", "namespace", "lifetime", "getIfExists"] as const) {
      if (o[k] !== undefined) throw new TypeError(`remote() option ${k} applies to actors, not to functions`);
    }
  } else if (o.maxRetries !== undefined || o.retryExceptions !== undefined) {
    throw new TypeError("remote() options maxRetries/retryExceptions apply to functions; for actors use maxRestarts and maxTaskRetries");
  }
  for (const k of ["retryExceptions", "getIfExists"] as const) {
    if (o[k] !== undefined && typeof o[k] !== "boolean") throw new TypeError(`remote() option ${k} must be true or false, got ${JSON.stringify(o[k])}`);
  }
  for (const k of ["name", "namespace"] as const) {
    if (o[k] !== undefined && (typeof o[k] !== "string" || o[k] === "")) throw new TypeError(`remote() option ${k} must be a non-empty string, got ${JSON.stringify(o[k])}`);
  }
  if (o.lifetime !== undefined && o.lifetime !== "detached") throw new TypeError(`remote() option lifetime must be "detached"`);
  if (o.lifetime === "detached" && !o.name) throw new TypeError("a detached actor needs a name (option name) so it can be found again");
  const s = o.schedulingStrategy;
  if (s !== undefined && s !== "DEFAULT" && s !== "SPREAD" && !(typeof s === "object" && s && ("nodeId" in s || "placementGroup" in s))) {
    throw new TypeError(`remote() option schedulingStrategy must be "DEFAULT", "SPREAD", { nodeId, soft } or { placementGroup, bundleIndex }`);
  }
  if (o.runtimeEnv?.env) {
    for (const [k, v] of Object.entries(o.runtimeEnv.env)) {
      if (typeof v !== "string") throw new TypeError(`runtimeEnv.env.${k} must be a string`);
    }
  }
  return o;
}

/** Resource demand of a task/actor: what the scheduler reserves. */
export function demandOf(o: RemoteOptions, kind: "task" | "actor"): Record<string, number> {
  const r: Record<string, number> = {};
  // Ray: tasks take 1 CPU by default; actors take 1 CPU to be placed and 0 while running. We
  // reserve 0 for a running default actor so that many actors fit on a small machine.
  const cpu = o.numCpus ?? (kind === "task" ? 1 : 0);
  if (cpu > 0) r.CPU = cpu;
  if (o.numGpus) r.GPU = o.numGpus;
  if (o.memory) r.memory = o.memory;
  for (const [k, v] of Object.entries(o.resources ?? {})) if (v > 0) r[k] = v;
  return r;
}
