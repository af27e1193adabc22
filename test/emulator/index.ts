// One harness per cloud, shared by the provider conformance suite and the e2e tests:
// how to start its emulator, the environment a process needs to reach it, a cluster YAML
// provider section, and the image's login user.
import fs from "node:fs";
import { AwsEmulator } from "./aws.js";
import type { EmulatorBase } from "./common.js";
import { GcpEmulator } from "./gcp.js";
import { AzureEmulator } from "./azure.js";

export { AwsEmulator, GcpEmulator, AzureEmulator };
export type { EmulatorBase };
export type { Faults, Inventory } from "./common.js";

export type CloudName = "aws" | "gcp" | "azure";

export interface CloudHarness<E extends EmulatorBase = EmulatorBase> {
  cloud: CloudName;
  start(): Promise<E>;
  /** Environment for the SDK (and for a `tray` child process). */
  env(emu: E): Record<string, string>;
  /** The `provider:` section of a cluster YAML. */
  provider(emu: E, cluster: string): { type: string; [key: string]: unknown };
  /** node_config of a head and a worker type. */
  nodeConfig(): { head: Record<string, unknown>; worker: Record<string, unknown> };
  user: string;
  /** Zones in the order a provider tries them (the first can be made to have no capacity). */
  zones(emu: E): string[];
  /** Options only an in-process provider needs (Azure: the test CA, which a child gets via NODE_EXTRA_CA_CERTS). */
  deps(emu: E): Record<string, unknown> | undefined;
  /** Environment in which the cloud's standard credential chain finds nothing (and fails fast). */
  noCredentials(emu: E): Record<string, string | undefined>;
  /** The cloud's own error codes for "no capacity in this zone", "permission denied", "quota exceeded". */
  capacityCode: string;
  permissionCode: string;
  quotaCode: string;
}

/** The address the emulated hosts see the CLI at (the bridge): the CIDR SSH is opened to. */
export const CALLER_CIDR = "10.78.0.1/32";

export const aws: CloudHarness<AwsEmulator> = {
  cloud: "aws",
  start: () => new AwsEmulator().start(),
  env: (e) => e.env(),
  provider: (e) => ({ type: "aws", region: e.region, availability_zone: e.zones.slice(0, 2).join(","), ssh_allowed_cidr: CALLER_CIDR, tags: { team: "tray-tests" } }),
  nodeConfig: () => ({ head: { InstanceType: "m5.large" }, worker: { InstanceType: "m5.xlarge", InstanceMarketOptions: { MarketType: "spot" } } }),
  user: "ubuntu",
  zones: (e) => e.zones.slice(0, 2),
  deps: () => undefined,
  noCredentials: () => ({
    AWS_ACCESS_KEY_ID: undefined,
    AWS_SECRET_ACCESS_KEY: undefined,
    AWS_SESSION_TOKEN: undefined,
    AWS_PROFILE: undefined,
    AWS_SHARED_CREDENTIALS_FILE: "/nonexistent/tray-test/credentials",
    AWS_CONFIG_FILE: "/nonexistent/tray-test/config",
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_CONTAINER_CREDENTIALS_FULL_URI: undefined,
    AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: undefined,
    AWS_WEB_IDENTITY_TOKEN_FILE: undefined,
  }),
  capacityCode: "InsufficientInstanceCapacity",
  permissionCode: "UnauthorizedOperation",
  quotaCode: "VcpuLimitExceeded",
};

export const gcp: CloudHarness<GcpEmulator> = {
  cloud: "gcp",
  start: () => new GcpEmulator().start(),
  env: (e) => e.env(),
  provider: (e) => ({ type: "gcp", project_id: e.project, region: e.region, availability_zone: e.zones.slice(0, 2).join(","), ssh_allowed_cidr: CALLER_CIDR, tags: { team: "tray-tests" } }),
  nodeConfig: () => ({
    head: { machineType: "n2-standard-2" },
    worker: {
      machineType: "n2-standard-4",
      disks: [{ boot: true, autoDelete: true, type: "PERSISTENT", initializeParams: { diskSizeGb: 50, sourceImage: "projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts" } }],
      scheduling: { provisioningModel: "SPOT", preemptible: true },
    },
  }),
  user: "ubuntu",
  zones: (e) => e.zones.slice(0, 2),
  deps: () => undefined,
  noCredentials: () => ({
    GOOGLE_APPLICATION_CREDENTIALS: undefined,
    CLOUDSDK_CONFIG: "/nonexistent/tray-test/gcloud", // no ADC file from `gcloud auth application-default login`
    HOME: "/nonexistent/tray-test",
    METADATA_SERVER_DETECTION: "none", // not on GCE: skip the metadata-server probe
  }),
  capacityCode: "ZONE_RESOURCE_POOL_EXHAUSTED",
  permissionCode: "forbidden",
  quotaCode: "QUOTA_EXCEEDED",
};

export const azure: CloudHarness<AzureEmulator> = {
  cloud: "azure",
  start: () => new AzureEmulator().start(),
  env: (e) => ({ ...e.env(), TRAY_AZURE_POLL_MS: "200" }),
  provider: (e) => ({ type: "azure", location: e.location, resource_group: "tray-rg", subscription_id: e.subscriptionId, ssh_allowed_cidr: CALLER_CIDR, tags: { team: "tray-tests" } }),
  nodeConfig: () => ({ head: { vmSize: "Standard_D2s_v5", zones: ["1", "2"] }, worker: { vmSize: "Standard_D4s_v5", zones: ["1", "2"], priority: "Spot" } }),
  user: "azureuser",
  zones: () => ["1", "2"],
  deps: (e) => ({ tlsCa: e.tls.ca }),
  noCredentials: () => ({
    PATH: (process.env.PATH ?? "").split(":").filter((d) => !d.includes("tray-az-emu-")).join(":"),
    AZURE_CLIENT_ID: undefined,
    AZURE_TENANT_ID: undefined,
    AZURE_CLIENT_SECRET: undefined,
    AZURE_TOKEN_CREDENTIALS: "dev", // developer credentials only: no managed-identity probe off Azure
  }),
  capacityCode: "ZonalAllocationFailed",
  permissionCode: "AuthorizationFailed",
  quotaCode: "OperationNotAllowed",
};

export const harnesses: CloudHarness<any>[] = [aws, gcp, azure];

function onPath(bin: string): boolean {
  return (process.env.PATH ?? "/usr/bin:/bin").split(":").some((d) => d && fs.existsSync(`${d}/${bin}`)) || fs.existsSync(`/usr/sbin/${bin}`) || fs.existsSync(`/sbin/${bin}`);
}

/** Why the emulator cannot run here (not root, no ip netns, no sshd...), or undefined when it can. */
export function emulatorUnavailable(cloud?: CloudName): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (network namespaces)";
  if (!fs.existsSync("/usr/sbin/sshd")) return "needs openssh-server (/usr/sbin/sshd)";
  if (!onPath("ip")) return "needs iproute2";
  for (const bin of ["ssh", "ssh-keygen", "flock", "useradd"]) if (!onPath(bin)) return `needs ${bin}`;
  if (cloud === "azure" && !onPath("openssl")) return "needs openssl (the Azure emulator serves https with a test CA)";
  return undefined;
}

/** Set environment variables, returning a function that restores the previous values. */
export function withEnv(vars: Record<string, string | undefined>): () => void {
  const saved: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(vars)) {
    saved[k] = process.env[k];
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  return () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
}
