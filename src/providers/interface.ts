// The one narrow, batched provider interface (shaped after SkyPilot's sky/provision).
// A provider creates, finds and removes machines. It knows nothing of SSH or the agent:
// the launcher bootstraps whatever a provider returns. Cloud SDKs are loaded with
// import() inside each provider so commands that never touch a cloud never pay for them.

/** Lifecycle state of one instance, normalised across clouds. */
export type InstanceState = "pending" | "running" | "stopping" | "stopped" | "terminated";

/** Tags tray puts on every resource it creates, so nodes can be found again by tag. */
export const TAG_CLUSTER = "tray-cluster-name";
export const TAG_NODE_TYPE = "tray-node-type";
export const TAG_NODE_KIND = "tray-node-kind"; // "head" | "worker"
export const TAG_NODE_NAME = "tray-node-name";

export interface InstanceRecord {
  /** Provider's own id (EC2 instance id, GCE instance name, Azure VM name, host address for ssh). */
  id: string;
  /** Stable, human-readable name tray gave the node (e.g. "demo-head", "demo-worker-2"). */
  name: string;
  kind: "head" | "worker";
  nodeType: string;
  state: InstanceState;
  privateIp?: string;
  publicIp?: string;
  zone?: string;
  /** How the launcher reaches the host over SSH. */
  ssh?: { host: string; port: number; user: string };
  tags: Record<string, string>;
}

/** One request to create `count` nodes of one node type. */
export interface RunRequest {
  clusterName: string;
  nodeType: string;
  kind: "head" | "worker";
  count: number;
  /** The YAML's node_config for this node type, provider-specific. */
  nodeConfig: Record<string, unknown>;
  /** Names to give the new nodes, one per node (length === count). */
  names: string[];
  /** Extra tags from the YAML. */
  tags: Record<string, string>;
}

export interface QueryFilter {
  clusterName: string;
  kind?: "head" | "worker";
  /** When false (default), terminated instances are left out. */
  includeTerminated?: boolean;
}

/** A cloud resource tray created and later removed (reported by `tray down`). */
export interface RemovedResource {
  kind: string; // "instance" | "security-group" | "firewall-rule" | "key-pair" | "nic" | "public-ip" | "disk" | ...
  id: string;
}

export interface ProviderCapabilities {
  /** The provider can stop (not terminate) instances. */
  stop: boolean;
  /** Instances are created by the provider (false for ssh/local: the hosts already exist). */
  creates: boolean;
  /** Nodes are reached over SSH (false for local). */
  ssh: boolean;
}

export interface Provider {
  readonly name: string;
  readonly capabilities: ProviderCapabilities;
  /** Prepare shared resources (security group / firewall, key pair, network). Idempotent. */
  bootstrap(): Promise<void>;
  runInstances(requests: RunRequest[]): Promise<InstanceRecord[]>;
  queryInstances(filter: QueryFilter): Promise<InstanceRecord[]>;
  /** Resolve when every id reaches `state` (or reject with a UserError naming the instance). */
  waitInstances(ids: string[], state: InstanceState, timeoutMs?: number): Promise<InstanceRecord[]>;
  stopInstances?(ids: string[]): Promise<void>;
  terminateInstances(ids: string[]): Promise<RemovedResource[]>;
  /** After all instances are gone: remove shared resources tray created for the cluster. */
  cleanup(): Promise<RemovedResource[]>;
}
