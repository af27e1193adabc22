// The `provider:` section: which keys each provider type takes, and what each requires.
import { isIP } from "node:net";
import { closestKey } from "./closest-key.js";
import {
  checkKnownKeys,
  describe,
  isMapValue,
  readBool,
  readMap,
  readString,
  readStringList,
  readStringMap,
  required,
  type YamlMap,
} from "./fields.js";
import { expandPath, pathProblem } from "./paths.js";
import type { Problems } from "./problems.js";
import { PROVIDER_TYPES, type ProviderConfig, type ProviderType } from "./types.js";

const COMMON_KEYS = ["type", "ssh_allowed_cidr", "tags", "known_hosts_file"] as const;
const CLOUD_KEYS = ["use_internal_ips", "cache_stopped_nodes"] as const;
export const PROVIDER_KEYS: Record<ProviderType, readonly string[]> = {
  local: [...COMMON_KEYS],
  ssh: [...COMMON_KEYS, "head_ip", "worker_ips"],
  aws: [...COMMON_KEYS, ...CLOUD_KEYS, "region", "availability_zone", "security_group"],
  gcp: [...COMMON_KEYS, ...CLOUD_KEYS, "project_id", "region", "availability_zone"],
  azure: [...COMMON_KEYS, ...CLOUD_KEYS, "location", "resource_group", "subscription_id"],
};
export const ALL_PROVIDER_KEYS = [...new Set(Object.values(PROVIDER_KEYS).flat())];

const PATH = ["provider"] as const;

/**
 * The provider type (undefined only when the type itself is wrong, so later sections that
 * depend on it are still checked when other provider keys are missing) and the whole section.
 */
export function readProvider(p: Problems, root: YamlMap, baseDir: string): { type?: ProviderType; config?: ProviderConfig } {
  const section = root.provider === undefined || root.provider === null ? {} : readMap(p, root.provider, PATH);
  if (!section) return {};
  const type = readType(p, section);
  if (!type) return {};
  return { type, ...optional("config", readSection(p, section, type, baseDir)) };
}

function readSection(p: Problems, section: YamlMap, type: ProviderType, baseDir: string): ProviderConfig | undefined {
  checkKnownKeys(p, section, PATH, PROVIDER_KEYS[type], misplacedKeys(type));

  const common = {
    tags: readStringMap(p, section, PATH, "tags", { scalarsAsText: true }) ?? {},
    ...optional("ssh_allowed_cidr", readCidr(p, section)),
    ...optional("known_hosts_file", readExistingPath(p, section, "known_hosts_file", baseDir)),
  };
  const cloud = {
    use_internal_ips: readBool(p, section, PATH, "use_internal_ips") ?? false,
    cache_stopped_nodes: readBool(p, section, PATH, "cache_stopped_nodes") ?? false,
  };
  const need = (key: string, what: string): string | undefined =>
    section[key] === undefined || section[key] === null ? required(p, [...PATH, key], what) : readString(p, section, PATH, key);

  switch (type) {
    case "local":
      return { type, ...common };
    case "ssh": {
      const head_ip = need("head_ip", "the address of the head host, e.g. 10.0.0.1");
      const worker_ips = readStringList(p, section, PATH, "worker_ips") ?? [];
      checkHosts(p, head_ip, worker_ips);
      return head_ip === undefined ? undefined : { type, head_ip, worker_ips, ...common };
    }
    case "aws": {
      const region = need("region", "the AWS region, e.g. us-west-2");
      const availability_zone = readString(p, section, PATH, "availability_zone");
      const availability_zones = splitZones(p, availability_zone, region);
      const security_group = readSecurityGroup(p, section);
      if (region === undefined) return undefined;
      return {
        type, region, availability_zones, ...common, ...cloud,
        ...optional("availability_zone", availability_zone),
        ...optional("security_group", security_group),
      };
    }
    case "gcp": {
      const project_id = need("project_id", "the Google Cloud project id, e.g. my-project-123456");
      const region = need("region", "the Compute Engine region, e.g. us-west1");
      const availability_zone = need("availability_zone", "the zone to create VMs in, e.g. us-west1-a");
      const availability_zones = splitZones(p, availability_zone, region);
      if (!project_id || !region || !availability_zone) return undefined;
      return { type, project_id, region, availability_zone, availability_zones, ...common, ...cloud };
    }
    case "azure": {
      const location = need("location", "the Azure region, e.g. westus2");
      const resource_group = need("resource_group", "the resource group tray creates VMs in, e.g. tray-cluster");
      const subscription_id = need("subscription_id", "your subscription id (az account show --query id)");
      if (subscription_id && !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(subscription_id)) {
        p.error([...PATH, "subscription_id"], `must be a subscription GUID like 00000000-0000-0000-0000-000000000000, got ${describe(subscription_id)}`);
      }
      if (!location || !resource_group || !subscription_id) return undefined;
      return { type, location, resource_group, subscription_id, ...common, ...cloud };
    }
  }
}

function readType(p: Problems, section: YamlMap): ProviderType | undefined {
  const raw = section.type;
  if (raw === undefined || raw === null) return "local";
  if (typeof raw === "string" && (PROVIDER_TYPES as readonly string[]).includes(raw)) return raw as ProviderType;
  const guess = typeof raw === "string" ? closestKey(raw, PROVIDER_TYPES) : undefined;
  p.error([...PATH, "type"], `must be one of ${PROVIDER_TYPES.join(", ")}, got ${describe(raw)}${guess ? `; did you mean \`${guess}\`?` : ""}`);
  return undefined;
}

// Keys that belong to another provider type get a message saying so, rather than "unknown key".
function misplacedKeys(type: ProviderType): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of ALL_PROVIDER_KEYS) {
    if (PROVIDER_KEYS[type].includes(key)) continue;
    const owners = PROVIDER_TYPES.filter((t) => PROVIDER_KEYS[t].includes(key));
    out[key] = `only used with type ${owners.join(" or ")}, and this provider is type ${type}`;
  }
  if (type === "local") {
    // Ray's on-prem provider is called "local"; tray's local runs everything on this machine.
    const hint = "type local runs every node on this machine; for a list of hosts reached over SSH (Ray's on-prem provider) write `type: ssh`";
    out.head_ip = hint;
    out.worker_ips = hint;
  }
  return out;
}

function readCidr(p: Problems, section: YamlMap): string | undefined {
  const cidr = readString(p, section, PATH, "ssh_allowed_cidr");
  if (cidr === undefined) return undefined;
  const [address, bits, extra] = cidr.split("/");
  const family = isIP(address ?? "");
  const max = family === 6 ? 128 : 32;
  const prefix = Number(bits);
  if (!family || extra !== undefined || bits === undefined || !/^\d+$/.test(bits) || prefix > max) {
    p.error([...PATH, "ssh_allowed_cidr"], `must be an address range like 203.0.113.7/32, got ${describe(cidr)}`);
    return undefined;
  }
  return cidr;
}

function readExistingPath(p: Problems, section: YamlMap, key: string, baseDir: string): string | undefined {
  const raw = readString(p, section, PATH, key);
  if (raw === undefined) return undefined;
  const full = expandPath(raw, baseDir);
  const problem = pathProblem(full, "file");
  if (problem) p.error([...PATH, key], problem);
  return full;
}

function checkHosts(p: Problems, head: string | undefined, workers: string[]): void {
  const seen = new Set<string>(head ? [head] : []);
  workers.forEach((ip, i) => {
    if (seen.has(ip)) p.error([...PATH, "worker_ips", i], `${ip} is listed twice (a host runs one node; the head host already runs a node)`);
    seen.add(ip);
  });
}

// "us-west-2a,us-west-2b" -> tried in that order. A zone outside the region is a typo that
// would otherwise only surface as a cloud API error minutes later.
function splitZones(p: Problems, zones: string | undefined, region: string | undefined): string[] {
  if (zones === undefined) return [];
  const list = zones.split(",").map((z) => z.trim()).filter((z) => z !== "");
  for (const zone of list) {
    if (region && !zone.startsWith(region)) {
      p.error([...PATH, "availability_zone"], `zone ${zone} is not in region ${region}`);
    }
  }
  return list;
}

function readSecurityGroup(p: Problems, section: YamlMap): string | { GroupName?: string; IpPermissions?: unknown[] } | undefined {
  const raw = section.security_group;
  if (raw === undefined || raw === null) return undefined;
  const path = [...PATH, "security_group"];
  if (typeof raw === "string" && raw.trim() !== "") return raw;
  if (!isMapValue(raw)) {
    p.error(path, `must be a group name or id, or a mapping with GroupName and IpPermissions, got ${describe(raw)}`);
    return undefined;
  }
  checkKnownKeys(p, raw, path, ["GroupName", "IpPermissions"]);
  const GroupName = readString(p, raw, path, "GroupName");
  const perms = raw.IpPermissions;
  if (perms !== undefined && perms !== null && !Array.isArray(perms)) p.error([...path, "IpPermissions"], `must be a list, got ${describe(perms)}`);
  return { ...optional("GroupName", GroupName), ...(Array.isArray(perms) ? { IpPermissions: perms } : {}) };
}

/** Spreads `{key: value}` only when value is defined (exactOptionalPropertyTypes-friendly). */
export function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}
