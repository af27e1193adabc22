// The cluster YAML after validation and defaults. Keys keep Ray's snake_case spelling so a
// value can be traced back to the line a user wrote; the only key that is not from the YAML
// is `notes` (and the derived `availability_zones`).

export type ProviderType = "local" | "ssh" | "aws" | "gcp" | "azure";
export const PROVIDER_TYPES: readonly ProviderType[] = ["local", "ssh", "aws", "gcp", "azure"];

interface ProviderCommon {
  /** CIDR allowed to reach SSH on cloud nodes; undefined = detect the caller's address at up time. */
  ssh_allowed_cidr?: string;
  /** Extra tags/labels put on everything a cloud provider creates. */
  tags: Record<string, string>;
  /** Absolute path of a known_hosts file whose keys are trusted for these hosts. */
  known_hosts_file?: string;
}

export interface LocalProviderConfig extends ProviderCommon {
  type: "local";
}

export interface SshProviderConfig extends ProviderCommon {
  type: "ssh";
  head_ip: string;
  worker_ips: string[];
}

interface CloudCommon extends ProviderCommon {
  use_internal_ips: boolean;
  /** Ray's key: stop instead of terminate on `down`. tray defaults to false (nothing left behind). */
  cache_stopped_nodes: boolean;
}

export interface AwsProviderConfig extends CloudCommon {
  type: "aws";
  region: string;
  /** As written: one zone or a comma separated list. */
  availability_zone?: string;
  /** availability_zone split on commas, in the order to try; empty = let EC2 choose. */
  availability_zones: string[];
  /** A group name/id to use, or Ray's form {GroupName, IpPermissions}; undefined = tray creates one. */
  security_group?: string | { GroupName?: string; IpPermissions?: unknown[] };
}

export interface GcpProviderConfig extends CloudCommon {
  type: "gcp";
  project_id: string;
  region: string;
  availability_zone: string;
  availability_zones: string[];
}

export interface AzureProviderConfig extends CloudCommon {
  type: "azure";
  location: string;
  resource_group: string;
  subscription_id: string;
}

export type ProviderConfig =
  | LocalProviderConfig
  | SshProviderConfig
  | AwsProviderConfig
  | GcpProviderConfig
  | AzureProviderConfig;

export interface AuthConfig {
  ssh_user: string;
  /** Absolute path (~ expanded, relative paths taken from the YAML file's folder); exists. */
  ssh_private_key: string;
  /** Absolute path; defaults to ssh_private_key + ".pub". Checked to exist for cloud providers. */
  ssh_public_key: string;
}

export interface NodeTypeConfig {
  /** CPU, GPU, memory (bytes) and custom resources; missing CPU/GPU/memory are detected by the agent. */
  resources: Record<string, number>;
  /** Provider-specific, passed to the provider as written (a few keys are type-checked). */
  node_config: Record<string, unknown>;
  min_workers: number;
  max_workers: number;
}

export interface ClusterConfig {
  cluster_name: string;
  provider: ProviderConfig;
  /** Present for every provider except `local`. */
  auth?: AuthConfig;
  available_node_types: Record<string, NodeTypeConfig>;
  head_node_type: string;
  max_workers: number;
  idle_timeout_minutes: number;
  upscaling_speed: number;
  /** remote path -> absolute local path (relative local paths are taken from the YAML's folder). */
  file_mounts: Record<string, string>;
  rsync_exclude: string[];
  rsync_filter: string[];
  initialization_commands: string[];
  setup_commands: string[];
  head_setup_commands: string[];
  worker_setup_commands: string[];
  /** Bytes for each node's object store; undefined = the agent's default. */
  object_store_memory?: number;
  /** Not a YAML key: "file:line: key: ..." remarks about accepted-but-ignored keys, for the CLI to print. */
  notes: string[];
}
