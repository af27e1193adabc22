// Whole-file validation: every top-level key, then the checks that span sections
// (head_node_type exists, worker counts add up), then defaults.
import { readAuth } from "./auth.js";
import { closestKey } from "./closest-key.js";
import {
  checkKnownKeys,
  describe,
  isMapValue,
  readNumber,
  readString,
  readStringList,
  readStringMap,
  required,
  type YamlMap,
} from "./fields.js";
import { readNodeTypes } from "./node-types.js";
import { expandPath, pathProblem } from "./paths.js";
import type { Problems } from "./problems.js";
import { ALL_PROVIDER_KEYS, optional, readProvider } from "./provider.js";
import type { ClusterConfig, NodeTypeConfig } from "./types.js";

const COMMAND_LISTS = ["initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands"] as const;
const IGNORED_LISTS = ["head_start_ray_commands", "worker_start_ray_commands", "cluster_synced_files"] as const;
const TOP_KEYS = [
  "cluster_name", "provider", "auth", "available_node_types", "head_node_type", "max_workers",
  "idle_timeout_minutes", "upscaling_speed", "file_mounts", "rsync_exclude", "rsync_filter",
  ...COMMAND_LISTS, "object_store_memory", ...IGNORED_LISTS, "file_mounts_sync_continuously", "docker",
];

const CLUSTER_NAME = /^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$/;

export function validateConfig(p: Problems, value: unknown, baseDir: string): ClusterConfig | undefined {
  if (value === null || value === undefined) {
    p.error([], "the file is empty; a cluster config needs at least `cluster_name:` (see cluster-configs/local.yaml)");
    return undefined;
  }
  if (!isMapValue(value)) {
    p.error([], `the file must hold a mapping of keys (cluster_name, provider, ...), got ${describe(value)}`);
    return undefined;
  }
  const root = value;
  checkKnownKeys(p, root, [], TOP_KEYS, misplacedTopKeys());

  const cluster_name = readClusterName(p, root);
  const { type, config: provider } = readProvider(p, root, baseDir);
  const auth = type ? readAuth(p, root, type, baseDir) : undefined;
  const workerIps = provider?.type === "ssh" ? provider.worker_ips : [];
  const read = type ? readNodeTypes(p, root, type, workerIps) : undefined;
  const nodeTypes = read?.types;
  const headType = read ? readHeadNodeType(p, root, read.names) : undefined;
  const maxWorkers = readNumber(p, root, [], "max_workers", { min: 0, integer: true });
  const idle_timeout_minutes = readNumber(p, root, [], "idle_timeout_minutes", { min: 0 }) ?? 5;
  const upscaling_speed = readNumber(p, root, [], "upscaling_speed", { above: 0 }) ?? 1;
  const object_store_memory = readNumber(p, root, [], "object_store_memory", { min: 1, integer: true, unit: "bytes" });
  const file_mounts = readFileMounts(p, root, baseDir);
  const commands = Object.fromEntries(COMMAND_LISTS.map((k) => [k, readStringList(p, root, [], k) ?? []])) as Record<(typeof COMMAND_LISTS)[number], string[]>;
  const rsync_exclude = readStringList(p, root, [], "rsync_exclude") ?? [];
  const rsync_filter = readStringList(p, root, [], "rsync_filter") ?? [];
  readIgnoredKeys(p, root);
  rejectDocker(p, root);

  // Counts across types are only meaningful when every type was valid.
  const allTypesValid = read !== undefined && read.names.length === Object.keys(read.types).length;
  const workers = nodeTypes && headType && allTypesValid ? applyWorkerDefaults(p, nodeTypes, headType, maxWorkers) : undefined;
  if (workers && provider?.type === "ssh") checkSshCapacity(p, workers.types, provider.worker_ips.length);

  if (!workers || !headType || !provider || cluster_name === undefined || p.errors.length > 0) return undefined;
  const { types, max_workers } = workers;

  return {
    cluster_name,
    provider,
    ...optional("auth", auth),
    available_node_types: types,
    head_node_type: headType,
    max_workers,
    idle_timeout_minutes,
    upscaling_speed,
    file_mounts,
    rsync_exclude,
    rsync_filter,
    ...commands,
    ...optional("object_store_memory", object_store_memory),
    notes: [],
  };
}

function misplacedTopKeys(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of ALL_PROVIDER_KEYS) if (key !== "type") out[key] = "belongs under `provider:`";
  for (const key of ["ssh_user", "ssh_private_key", "ssh_public_key"]) out[key] = "belongs under `auth:`";
  for (const key of ["resources", "node_config", "min_workers"]) out[key] = "belongs under a node type in `available_node_types:`";
  for (const key of ["head_node", "worker_nodes"]) {
    out[key] = "Ray's old head_node/worker_nodes form is not supported; describe nodes in `available_node_types:` with `head_node_type:`";
  }
  return out;
}

function readClusterName(p: Problems, root: YamlMap): string | undefined {
  if (root.cluster_name === undefined || root.cluster_name === null) {
    return required(p, ["cluster_name"], "name this cluster with lowercase letters, digits and dashes, e.g. `cluster_name: demo`");
  }
  // YAML reads `cluster_name: 2024` as a number; a name of digits is still a fine name.
  const name = typeof root.cluster_name === "number" && Number.isInteger(root.cluster_name) ? String(root.cluster_name) : readString(p, root, [], "cluster_name");
  if (name === undefined) return undefined;
  if (!CLUSTER_NAME.test(name)) {
    p.error(["cluster_name"], `${JSON.stringify(name)} is not allowed: use 1 to 40 lowercase letters, digits and dashes, starting and ending with a letter or digit (it becomes part of VM and folder names)`);
    return undefined;
  }
  return name;
}

function readHeadNodeType(p: Problems, root: YamlMap, names: string[]): string | undefined {
  const given = readString(p, root, [], "head_node_type");
  if (given !== undefined) {
    if (names.includes(given)) return given;
    const guess = closestKey(given, names);
    p.error(["head_node_type"], `no node type named ${JSON.stringify(given)} in available_node_types${guess ? `; did you mean \`${guess}\`?` : ` (there are: ${names.join(", ")})`}`);
    return undefined;
  }
  if (root.head_node_type !== undefined && root.head_node_type !== null) return undefined; // wrong type, reported
  if (names.length === 1) return names[0];
  const conventional = ["head", "ray.head.default"].find((n) => names.includes(n));
  if (conventional) return conventional;
  return required(p, ["head_node_type"], `which node type runs the head: one of ${names.join(", ")}`);
}

// Ray's rule: a worker type's max_workers defaults to the cluster's max_workers. tray adds: the
// cluster's max_workers defaults to what the types ask for (their max, or their min when no max
// is given), so a file that only says `min_workers: 2` starts two workers and no more.
function applyWorkerDefaults(
  p: Problems,
  nodeTypes: Record<string, NodeTypeConfig>,
  headType: string,
  clusterMax: number | undefined,
): { types: Record<string, NodeTypeConfig>; max_workers: number } {
  const types: Record<string, NodeTypeConfig> = {};
  for (const [name, t] of Object.entries(nodeTypes)) {
    const fallback = name === headType || clusterMax === undefined ? t.min_workers : Math.max(t.min_workers, clusterMax);
    types[name] = { ...t, max_workers: Number.isNaN(t.max_workers) ? fallback : t.max_workers };
  }
  const sumMin = Object.values(types).reduce((s, t) => s + t.min_workers, 0);
  const max_workers = clusterMax ?? Object.values(types).reduce((s, t) => s + t.max_workers, 0);
  if (sumMin > max_workers) {
    p.error(["max_workers"], `is ${max_workers}, fewer than the ${sumMin} workers that the node types' min_workers add up to`);
  }
  return { types, max_workers };
}

function checkSshCapacity(p: Problems, types: Record<string, NodeTypeConfig>, hosts: number): void {
  const wanted = Object.values(types).reduce((s, t) => s + t.min_workers, 0);
  if (wanted > hosts) {
    p.error(["available_node_types"], `the node types' min_workers add up to ${wanted} workers, but provider.worker_ips lists ${hosts} host${hosts === 1 ? "" : "s"} (one node per host)`);
  }
}

function readFileMounts(p: Problems, root: YamlMap, baseDir: string): Record<string, string> {
  const mounts = readStringMap(p, root, [], "file_mounts") ?? {};
  const out: Record<string, string> = {};
  for (const [remote, local] of Object.entries(mounts)) {
    const at = ["file_mounts", remote];
    if (!remote.startsWith("/") && remote !== "~" && !remote.startsWith("~/")) {
      p.error(at, "the remote path (the key) must be absolute or start with ~/");
      continue;
    }
    const full = expandPath(local, baseDir);
    const problem = pathProblem(full, "file or folder");
    if (problem) p.error(at, problem);
    out[remote] = full;
  }
  return out;
}

function readIgnoredKeys(p: Problems, root: YamlMap): void {
  for (const key of IGNORED_LISTS) {
    const list = readStringList(p, root, [], key);
    if (!list || list.length === 0) continue;
    p.note([key], key === "cluster_synced_files"
      ? "ignored: tray does not sync files between nodes; use file_mounts"
      : "ignored: tray starts its own agent on every node instead of `ray start`");
  }
  if (root.file_mounts_sync_continuously === true) {
    p.note(["file_mounts_sync_continuously"], "ignored: file_mounts are synced at `tray up` only");
  } else if (root.file_mounts_sync_continuously !== undefined && root.file_mounts_sync_continuously !== null && root.file_mounts_sync_continuously !== false) {
    p.error(["file_mounts_sync_continuously"], `must be true or false, got ${describe(root.file_mounts_sync_continuously)}`);
  }
}

function rejectDocker(p: Problems, root: YamlMap): void {
  const docker = root.docker;
  const empty = docker === undefined || docker === null || (isMapValue(docker) && Object.keys(docker).length === 0);
  if (!empty) {
    p.error(["docker"], "not supported yet: tray runs jobs directly on each host; remove this section and install what jobs need with setup_commands");
  }
}
