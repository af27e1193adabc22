// `available_node_types:` — what each kind of node offers and how many of it to run.
import { availableParallelism } from "node:os";
import { checkKnownKeys, checkNumber, describe, isMapValue, readMap, readNumber, type YamlMap } from "./fields.js";
import type { Problems } from "./problems.js";
import type { NodeTypeConfig, ProviderType } from "./types.js";
import type { KeyPath } from "./yaml-source.js";

const NODE_TYPE_KEYS = ["resources", "node_config", "min_workers", "max_workers"];
const PATH = ["available_node_types"] as const;
const WELL_KNOWN_RESOURCES = ["CPU", "GPU", "memory"];

type Shape = "text" | "list" | "mapping" | "mapping or list";
interface NodeConfigRule {
  /** The machine size key; without it a cloud cannot create the VM. */
  size: string;
  sizeExample: string;
  shapes: Record<string, Shape>;
}

// Only the keys whose shape is certain are checked; everything else in node_config is passed to
// the cloud as written, as Ray does, so new cloud options need no tray release.
const NODE_CONFIG_RULES: Partial<Record<ProviderType, NodeConfigRule>> = {
  aws: {
    size: "InstanceType",
    sizeExample: "m5.large",
    shapes: {
      InstanceType: "text", ImageId: "text", KeyName: "text", UserData: "text",
      BlockDeviceMappings: "list", SubnetIds: "list", SecurityGroupIds: "list", TagSpecifications: "list",
      InstanceMarketOptions: "mapping", IamInstanceProfile: "mapping", Placement: "mapping",
    },
  },
  gcp: {
    size: "machineType",
    sizeExample: "n2-standard-2",
    shapes: {
      machineType: "text", disks: "list", guestAccelerators: "list", serviceAccounts: "list",
      networkInterfaces: "list", metadata: "mapping", labels: "mapping", tags: "mapping",
      scheduling: "mapping or list",
    },
  },
  azure: {
    size: "vmSize",
    sizeExample: "Standard_D2s_v3",
    shapes: {
      vmSize: "text", imagePublisher: "text", imageOffer: "text", imageSku: "text", imageVersion: "text",
      priority: "text", azure_arm_parameters: "mapping",
    },
  },
};

/**
 * The node types (defaults when none are written). Invalid types are reported and left out of
 * `types` but kept in `names`, so head_node_type can still be checked against every name.
 */
export function readNodeTypes(
  p: Problems,
  root: YamlMap,
  type: ProviderType,
  workerIps: string[],
): { types: Record<string, NodeTypeConfig>; names: string[] } | undefined {
  const raw = root.available_node_types;
  if (raw === undefined || raw === null || (isMapValue(raw) && Object.keys(raw).length === 0)) {
    const types = defaultNodeTypes(p, type, workerIps);
    return types && { types, names: Object.keys(types) };
  }
  const section = readMap(p, raw, PATH);
  if (!section) return undefined;
  const types: Record<string, NodeTypeConfig> = {};
  for (const [name, value] of Object.entries(section)) {
    const nodeType = readNodeType(p, name, value, type);
    if (nodeType) types[name] = nodeType;
  }
  return { types, names: Object.keys(section) };
}

function defaultNodeTypes(p: Problems, type: ProviderType, workerIps: string[]): Record<string, NodeTypeConfig> | undefined {
  const blank = { node_config: {}, min_workers: 0, max_workers: 0 };
  if (type === "local") return { head: { ...blank, resources: { CPU: availableParallelism() } } };
  if (type === "ssh") {
    // Ray's on-prem shape: every listed worker host runs one worker node; the agent detects resources.
    const n = workerIps.length;
    return n === 0 ? { head: { ...blank, resources: {} } } : { head: { ...blank, resources: {} }, worker: { ...blank, resources: {}, min_workers: n, max_workers: n } };
  }
  const rule = NODE_CONFIG_RULES[type]!;
  p.error(PATH, `required for provider type ${type}: name a head type and worker types, each with node_config.${rule.size} (e.g. ${rule.sizeExample})`);
  return undefined;
}

function readNodeType(p: Problems, name: string, value: unknown, type: ProviderType): NodeTypeConfig | undefined {
  const path = [...PATH, name];
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(name)) {
    p.error(path, "a node type name may hold letters, digits, dots, dashes and underscores (at most 63), starting with a letter or digit");
  }
  const m = readMap(p, value, path) ?? (value === null || value === undefined ? {} : undefined);
  if (!m) return undefined;
  checkKnownKeys(p, m, path, NODE_TYPE_KEYS);
  const before = p.errors.length;
  const resources = readResources(p, m, path);
  const node_config = readMap(p, m.node_config, [...path, "node_config"]) ?? {};
  checkNodeConfig(p, node_config, [...path, "node_config"], type);
  const min_workers = readNumber(p, m, path, "min_workers", { min: 0, integer: true }) ?? 0;
  // max_workers left undefined (NaN marker) so the cluster-wide default can be applied later.
  const max_workers = readNumber(p, m, path, "max_workers", { min: 0, integer: true }) ?? Number.NaN;
  if (!Number.isNaN(max_workers) && min_workers > max_workers) {
    p.error([...path, "min_workers"], `is ${min_workers}, more than this type's max_workers (${max_workers})`);
  }
  return p.errors.length === before ? { resources, node_config, min_workers, max_workers } : undefined;
}

function readResources(p: Problems, m: YamlMap, path: KeyPath): Record<string, number> {
  const section = readMap(p, m.resources, [...path, "resources"]);
  const out: Record<string, number> = {};
  if (!section) return out;
  for (const [name, amount] of Object.entries(section)) {
    const at = [...path, "resources", name];
    // A custom resource named "cpu" is never what was meant: names are case-sensitive, as in Ray.
    const wellKnown = WELL_KNOWN_RESOURCES.find((w) => w.toLowerCase() === name.toLowerCase() && w !== name);
    if (wellKnown) {
      p.error(at, `resource names are case-sensitive; did you mean \`${wellKnown}\`?`);
      continue;
    }
    const n = checkNumber(p, amount, at, { min: 0, unit: name === "memory" ? "bytes" : undefined });
    if (n !== undefined) out[name] = n;
  }
  return out;
}

function checkNodeConfig(p: Problems, config: YamlMap, path: KeyPath, type: ProviderType): void {
  const rule = NODE_CONFIG_RULES[type];
  if (!rule) return;
  checkShapes(p, config, path, rule.shapes);
  // Ray's Azure files nest the VM parameters under azure_arm_parameters; both places are accepted.
  const nested = type === "azure" && isMapValue(config.azure_arm_parameters) ? config.azure_arm_parameters : undefined;
  if (nested) checkShapes(p, nested, [...path, "azure_arm_parameters"], rule.shapes);
  if (config[rule.size] === undefined && nested?.[rule.size] === undefined) {
    p.error([...path, rule.size], `required: the machine size for provider type ${type}, e.g. ${rule.sizeExample}`);
  }
}

function checkShapes(p: Problems, config: YamlMap, path: KeyPath, shapes: Record<string, Shape>): void {
  for (const [key, shape] of Object.entries(shapes)) {
    const value = config[key];
    if (value === undefined) continue;
    const fits =
      shape === "text" ? typeof value === "string"
      : shape === "list" ? Array.isArray(value)
      : shape === "mapping" ? isMapValue(value)
      : isMapValue(value) || Array.isArray(value);
    if (!fits) p.error([...path, key], `must be ${shape === "text" ? "text" : `a ${shape}`}, got ${describe(value)}`);
  }
}
