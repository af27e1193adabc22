// Azure provider: @azure/arm-compute and @azure/arm-network (loaded with import() on first
// use), credentials from @azure/identity's DefaultAzureCredential (environment variables,
// workload identity, managed identity, `az login`, ...).
//
// Resources tray creates in provider.resource_group (which must exist), all tagged with the
// cluster name: a virtual network `tray-<cluster>-vnet` whose subnet carries the network
// security group `tray-<cluster>-nsg` (SSH from the caller's CIDR, everything within the
// virtual network, Azure's default deny for the rest); per node a public IP (unless
// use_internal_ips), a NIC, the VM (osProfile with the user's PUBLIC key, password login
// disabled) and its OS disk (tagged after creation: Azure does not tag implicit disks).
//
// Endpoint: AZURE_RESOURCE_MANAGER_ENDPOINT (default https://management.azure.com; e.g. an
// Azure Stack Hub or the test emulator). Retries: the SDK's pipeline retries 429 (honouring
// Retry-After) and 5xx with exponential backoff; capacity, quota and permission errors arrive
// as the cloud's codes and become one UserError sentence.
import { UserError } from "../../errors.js";
import {
  TAG_CLUSTER,
  TAG_NODE_KIND,
  TAG_NODE_NAME,
  TAG_NODE_TYPE,
  type InstanceRecord,
  type InstanceState,
  type Provider,
  type QueryFilter,
  type RemovedResource,
  type RunRequest,
} from "../interface.js";
import {
  callerCidr,
  clusterTags,
  extraTags,
  nodeTags,
  pollUntil,
  readPublicKey,
  requireProviderString,
  sshUser,
  useInternalIps,
  zoneList,
  type ProviderClusterConfig,
} from "../index.js";
import { cloudUserError, oneLine, type CloudErrorInfo } from "../retry.js";

type ArmCompute = typeof import("@azure/arm-compute");
type ArmNetwork = typeof import("@azure/arm-network");

const CAPACITY = new Set([
  "ZonalAllocationFailed",
  "AllocationFailed",
  "OverconstrainedAllocationRequest",
  "OverconstrainedZonalAllocationRequest",
  "SkuNotAvailable",
  "SkuNotAvailableInZone",
  "AllocationFailedVMSizeNotAvailable",
]);
const QUOTA = new Set(["QuotaExceeded", "OperationNotAllowed", "PublicIPCountLimitReached", "ResourceQuotaExceeded", "SubscriptionNotRegistered"]);
const PERMISSION = new Set(["AuthorizationFailed", "LinkedAuthorizationFailed", "Forbidden", "RequestDisallowedByPolicy"]);
const CREDENTIALS = new Set(["InvalidAuthenticationToken", "ExpiredAuthenticationToken", "InvalidAuthenticationTokenTenant", "AuthenticationFailed"]);
const THROTTLING = new Set(["TooManyRequests", "SubscriptionRequestsThrottled", "ResourceRequestsThrottled", "RetryableError", "InternalServerError", "ServiceUnavailable", "GatewayTimeout"]);
const IN_USE = new Set(["InUseSubnetCannotBeDeleted", "InUseNetworkSecurityGroupCannotBeDeleted", "NicInUse", "PublicIPAddressCannotBeDeleted", "AnotherOperationInProgress", "OperationNotAllowed"]);

/** Classify an error from the Azure SDKs or @azure/identity (pure: unit-tested). */
export function classifyAzureError(err: unknown): CloudErrorInfo {
  const e = err as any;
  const inner = e?.details?.error ?? e?.response?.parsedBody?.error;
  // a failed long-running operation surfaces as a plain Error from @azure/core-lro:
  // "The long-running operation has failed. ZonalAllocationFailed. Allocation failed. ..."
  const lro = typeof e?.message === "string" ? /^The long-running operation has failed\. ([A-Za-z0-9_.]+)\. ([\s\S]*)$/.exec(e.message) : null;
  const code: string = String(inner?.code ?? lro?.[1] ?? e?.code ?? e?.name ?? "Error");
  const message = String(inner?.message ?? lro?.[2] ?? e?.message ?? err);
  const status: number | undefined = e?.statusCode;
  let cls: CloudErrorInfo["cls"] = "other";
  if (e?.name === "CredentialUnavailableError" || e?.name === "AggregateAuthenticationError" || e?.name === "AuthenticationError") cls = "credentials";
  else if (CAPACITY.has(code)) cls = "capacity";
  else if (code === "OperationNotAllowed" && !/quota/i.test(message)) cls = "conflict";
  else if (QUOTA.has(code)) cls = "quota";
  else if (PERMISSION.has(code) || status === 403) cls = "permission";
  else if (CREDENTIALS.has(code) || status === 401) cls = "credentials";
  else if (THROTTLING.has(code) || status === 429 || (status !== undefined && status >= 500)) cls = "transient";
  else if (status === 404 || /NotFound$/.test(code)) cls = "not-found";
  else if (status === 409 || IN_USE.has(code)) cls = "conflict";
  return { cls, code, message, ...(status !== undefined ? { status } : {}) };
}

/** "PowerState/running" + "ProvisioningState/succeeded" -> tray's state. */
export function azureState(statuses: { code?: string }[] | undefined, provisioningState?: string): InstanceState {
  const codes = (statuses ?? []).map((s) => String(s.code ?? "").toLowerCase());
  const power = codes.find((c) => c.startsWith("powerstate/"))?.slice("powerstate/".length);
  const prov = (provisioningState ?? codes.find((c) => c.startsWith("provisioningstate/"))?.slice("provisioningstate/".length) ?? "").toLowerCase();
  if (prov === "deleting") return "stopping";
  if (prov === "failed") return "terminated";
  switch (power) {
    case "running":
      return prov === "succeeded" || prov === "" ? "running" : "pending";
    case "starting":
      return "pending";
    case "stopping":
    case "deallocating":
      return "stopping";
    case "stopped":
    case "deallocated":
      return "stopped";
    default:
      return "pending";
  }
}

/** Azure names: letters, digits, "-", at most 64 characters (Linux VM names). */
export function azureName(s: string): string {
  return s.replace(/[^A-Za-z0-9-]/g, "-").slice(0, 64).replace(/-+$/, "") || "tray";
}

function lastPart(id: string | undefined): string {
  return String(id ?? "").split("/").pop() ?? "";
}

export interface AzureProviderDeps {
  /** Extra trusted CA (PEM) for the ARM endpoint; NODE_EXTRA_CA_CERTS does the same for a whole process. */
  tlsCa?: string;
}

export class AzureProvider implements Provider {
  readonly name = "azure";
  readonly capabilities = { stop: true, creates: true, ssh: true };
  readonly cluster: string;
  readonly rg: string;
  readonly location: string;
  readonly subscriptionId: string;
  readonly endpoint: string;
  private clients?: { compute: InstanceType<ArmCompute["ComputeManagementClient"]>; network: InstanceType<ArmNetwork["NetworkManagementClient"]> };
  private subnetId?: string;

  constructor(
    private config: ProviderClusterConfig,
    private deps: AzureProviderDeps = {},
  ) {
    this.cluster = config.cluster_name;
    this.rg = requireProviderString(config, "resource_group", "tray-demo");
    this.location = requireProviderString(config, "location", "westus2");
    this.subscriptionId = requireProviderString(config, "subscription_id", "00000000-0000-0000-0000-000000000000");
    this.endpoint = (process.env.AZURE_RESOURCE_MANAGER_ENDPOINT || "https://management.azure.com").replace(/\/+$/, "");
  }

  private get names() {
    const base = azureName(`tray-${this.cluster}`);
    return { vnet: `${base}-vnet`, nsg: `${base}-nsg`, subnet: "default" };
  }

  private async api() {
    if (this.clients) return this.clients;
    const [{ ComputeManagementClient }, { NetworkManagementClient }, { DefaultAzureCredential }] = await Promise.all([
      import("@azure/arm-compute"),
      import("@azure/arm-network"),
      import("@azure/identity"),
    ]);
    const credential = new DefaultAzureCredential();
    try {
      await credential.getToken(`${this.endpoint}/.default`);
    } catch (e: any) {
      throw new UserError(`No Azure credentials found (${oneLine(String(e?.message ?? e).split("\n")[0] ?? "", 200)}).`, {
        cause: e,
        hint: "run `az login`, or set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET",
      });
    }
    const options: Record<string, unknown> = {
      endpoint: this.endpoint,
      credentialScopes: [`${this.endpoint}/.default`],
      retryOptions: { maxRetries: 6, retryDelayInMs: 500, maxRetryDelayInMs: 20_000 },
      ...(this.deps.tlsCa ? { tlsOptions: { ca: this.deps.tlsCa } } : {}),
    };
    this.clients = {
      compute: new ComputeManagementClient(credential, this.subscriptionId, options),
      network: new NetworkManagementClient(credential, this.subscriptionId, options),
    };
    return this.clients;
  }

  /** Poll interval of long-running operations when Azure sends no Retry-After (TRAY_AZURE_POLL_MS). */
  private lro = { updateIntervalInMs: Number(process.env.TRAY_AZURE_POLL_MS ?? 2000) };

  private userError(action: string, e: unknown): unknown {
    if (e instanceof UserError) return e;
    const info = classifyAzureError(e);
    if (info.code === "ResourceGroupNotFound") {
      return new UserError(`Azure resource group ${this.rg} (provider.resource_group) does not exist in subscription ${this.subscriptionId}.`, {
        cause: e,
        hint: `create it with: az group create --name ${this.rg} --location ${this.location}`,
      });
    }
    if (info.code === "SubscriptionNotFound") {
      return new UserError(`Azure subscription ${this.subscriptionId} (provider.subscription_id) was not found for these credentials.`, { cause: e });
    }
    if (info.cls === "other" && (e as any)?.statusCode === undefined && !(e as any)?.code && info.code === "Error") return e; // a bug, not the cloud
    return cloudUserError("Azure", action, info, e);
  }

  private async wrap<T>(action: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw this.userError(action, e);
    }
  }

  private async getOrUndefined<T>(action: string, fn: () => Promise<T>): Promise<T | undefined> {
    try {
      return await fn();
    } catch (e) {
      if (classifyAzureError(e).cls === "not-found") return undefined;
      throw this.userError(action, e);
    }
  }

  // ------------------------------------------------------------------ network

  async bootstrap(): Promise<void> {
    const { network } = await this.api();
    const cidr = await callerCidr(this.config);
    const tags = clusterTags(this.cluster, extraTags(this.config));
    const n = this.names;
    const nsg = await this.wrap("create network security group", () =>
      network.networkSecurityGroups.beginCreateOrUpdateAndWait(
        this.rg,
        n.nsg,
        {
          location: this.location,
          tags,
          securityRules: [
            {
              name: "tray-ssh",
              protocol: "Tcp",
              sourceAddressPrefix: cidr,
              sourcePortRange: "*",
              destinationAddressPrefix: "*",
              destinationPortRange: "22",
              access: "Allow",
              direction: "Inbound",
              priority: 1000,
              description: "SSH from the tray CLI",
            },
            {
              name: "tray-internal",
              protocol: "*",
              sourceAddressPrefix: "VirtualNetwork",
              sourcePortRange: "*",
              destinationAddressPrefix: "VirtualNetwork",
              destinationPortRange: "*",
              access: "Allow",
              direction: "Inbound",
              priority: 1010,
              description: "all traffic within the cluster",
            },
          ],
        },
        this.lro,
      ),
    );
    const existing = await this.getOrUndefined("get virtual network", () => network.virtualNetworks.get(this.rg, n.vnet));
    if (existing && existing.tags?.[TAG_CLUSTER] !== this.cluster) {
      throw new UserError(`Azure virtual network ${n.vnet} in ${this.rg} exists but was not made by tray for this cluster; remove it or rename the cluster.`);
    }
    const vnet = await this.wrap("create virtual network", () =>
      network.virtualNetworks.beginCreateOrUpdateAndWait(
        this.rg,
        n.vnet,
        {
          location: this.location,
          tags,
          addressSpace: { addressPrefixes: [String(this.config.provider.vnet_cidr ?? "10.250.0.0/16")] },
          subnets: [{ name: n.subnet, addressPrefix: String(this.config.provider.subnet_cidr ?? "10.250.0.0/20"), networkSecurityGroup: { id: nsg.id! } }],
        },
        this.lro,
      ),
    );
    this.subnetId = vnet.subnets?.find((s) => s.name === n.subnet)?.id ?? `${vnet.id}/subnets/${n.subnet}`;
  }

  // ------------------------------------------------------------------ instances

  async runInstances(requests: RunRequest[]): Promise<InstanceRecord[]> {
    if (!this.subnetId) await this.bootstrap();
    const { network, compute } = await this.api();
    const pub = await readPublicKey(this.config);
    const user = sshUser(this.config, "azureuser");
    const out: InstanceRecord[] = [];
    for (const req of requests) {
      const raw = req.nodeConfig ?? {};
      const nc: Record<string, any> = { ...raw, ...((raw.azure_arm_parameters as Record<string, unknown>) ?? {}) };
      const zones = zoneList(nc.zones ?? nc.availability_zone ?? this.config.provider.availability_zone);
      const launches = req.names.map(async (nodeName) => {
        const name = azureName(nodeName);
        const tags = nodeTags(req.clusterName, req.nodeType, req.kind, nodeName, { ...extraTags(this.config), ...req.tags });
        // public IP + NIC (create-or-update: idempotent; again after a zone without capacity,
        // whose failed VM took its NIC with it)
        const ensureNic = async (): Promise<string> => {
          let pipId: string | undefined;
          if (!useInternalIps(this.config)) {
            const pip = await this.wrap(`create public IP ${name}-ip`, () =>
              network.publicIPAddresses.beginCreateOrUpdateAndWait(
                this.rg,
                `${name}-ip`,
                { location: this.location, tags, sku: { name: "Standard" }, publicIPAllocationMethod: "Static", publicIPAddressVersion: "IPv4" },
                this.lro,
              ),
            );
            pipId = pip.id!;
          }
          const nic = await this.wrap(`create network interface ${name}-nic`, () =>
            network.networkInterfaces.beginCreateOrUpdateAndWait(
              this.rg,
              `${name}-nic`,
              {
                location: this.location,
                tags,
                ipConfigurations: [{ name: "ipconfig1", subnet: { id: this.subnetId! }, privateIPAllocationMethod: "Dynamic", ...(pipId ? { publicIPAddress: { id: pipId } } : {}) }],
              },
              this.lro,
            ),
          );
          return nic.id!;
        };
        const spot = String(nc.priority ?? "").toLowerCase() === "spot" || nc.spot === true;
        const vmParams = (zone: string | undefined, nicId: string): any => ({
          location: this.location,
          tags,
          ...(zone ? { zones: [zone] } : {}),
          hardwareProfile: { vmSize: String(nc.vmSize ?? "Standard_D2s_v5") },
          storageProfile: {
            imageReference: {
              publisher: String(nc.imagePublisher ?? "Canonical"),
              offer: String(nc.imageOffer ?? "0001-com-ubuntu-server-jammy"),
              sku: String(nc.imageSku ?? "22_04-lts-gen2"),
              version: String(nc.imageVersion ?? "latest"),
            },
            osDisk: {
              name: `${name}-osdisk`,
              createOption: "FromImage",
              deleteOption: "Delete",
              diskSizeGB: Number(nc.osDiskSizeGB ?? nc.diskSizeGb ?? nc.disk_size_gb ?? 64),
              managedDisk: { storageAccountType: String(nc.osDiskType ?? "Premium_LRS") },
            },
          },
          osProfile: {
            computerName: name,
            adminUsername: user,
            linuxConfiguration: { disablePasswordAuthentication: true, ssh: { publicKeys: [{ path: `/home/${user}/.ssh/authorized_keys`, keyData: pub }] } },
          },
          networkProfile: { networkInterfaces: [{ id: nicId, primary: true, deleteOption: "Delete" }] },
          ...(spot ? { priority: "Spot", evictionPolicy: "Delete", billingProfile: { maxPrice: -1 } } : {}),
        });
        let lastErr: unknown;
        for (const zone of zones.length ? zones : [undefined]) {
          try {
            const nicId = await ensureNic();
            await compute.virtualMachines.beginCreateOrUpdateAndWait(this.rg, name, vmParams(zone, nicId), this.lro);
            lastErr = undefined;
            break;
          } catch (e) {
            lastErr = e;
            if (classifyAzureError(e).cls !== "capacity") throw this.userError(`create VM ${name}${zone ? ` in zone ${zone}` : ""}`, e);
            // Azure keeps a VM whose allocation failed (provisioning state Failed): remove it, then try the next zone
            await compute.virtualMachines.beginDeleteAndWait(this.rg, name, this.lro).catch(() => {});
          }
        }
        if (lastErr) throw this.userError(`create VM ${name} (zones tried: ${zones.join(", ") || "any"})`, lastErr);
        // tag the OS disk: Azure does not copy the VM's tags onto it
        await this.wrap(`tag OS disk ${name}-osdisk`, () => compute.disks.beginUpdateAndWait(this.rg, `${name}-osdisk`, { tags }, this.lro));
        const vm = await this.wrap("get VM", () => compute.virtualMachines.get(this.rg, name));
        return this.record(vm, await this.addresses());
      });
      const settled = await Promise.allSettled(launches);
      for (const s of settled) if (s.status === "fulfilled") out.push(s.value);
      const failed = settled.find((s) => s.status === "rejected") as PromiseRejectedResult | undefined;
      if (failed) throw failed.reason;
    }
    return out;
  }

  /** NIC id -> private IP and public IP, for every NIC of the resource group (two list calls). */
  private async addresses(): Promise<Map<string, { privateIp?: string; publicIp?: string }>> {
    const { network } = await this.api();
    const pips = new Map<string, string | undefined>();
    await this.wrap("list public IPs", async () => {
      for await (const p of network.publicIPAddresses.list(this.rg)) pips.set(String(p.id).toLowerCase(), p.ipAddress);
    });
    const out = new Map<string, { privateIp?: string; publicIp?: string }>();
    await this.wrap("list network interfaces", async () => {
      for await (const n of network.networkInterfaces.list(this.rg)) {
        const ipc = n.ipConfigurations?.[0];
        const entry: { privateIp?: string; publicIp?: string } = {};
        if (ipc?.privateIPAddress) entry.privateIp = ipc.privateIPAddress;
        const pub = ipc?.publicIPAddress?.id ? pips.get(ipc.publicIPAddress.id.toLowerCase()) : undefined;
        if (pub) entry.publicIp = pub;
        out.set(String(n.id).toLowerCase(), entry);
      }
    });
    return out;
  }

  private record(vm: any, addrs: Map<string, { privateIp?: string; publicIp?: string }>, statuses?: { code?: string }[]): InstanceRecord {
    const tags: Record<string, string> = vm.tags ?? {};
    const nicId = String(vm.networkProfile?.networkInterfaces?.[0]?.id ?? "").toLowerCase();
    const a = addrs.get(nicId) ?? {};
    const host = useInternalIps(this.config) ? a.privateIp : a.publicIp ?? a.privateIp;
    const rec: InstanceRecord = {
      id: String(vm.name),
      name: tags[TAG_NODE_NAME] ?? String(vm.name),
      kind: tags[TAG_NODE_KIND] === "head" ? "head" : "worker",
      nodeType: tags[TAG_NODE_TYPE] ?? "",
      state: statuses ? azureState(statuses, vm.provisioningState) : vm.provisioningState === "Succeeded" ? "running" : azureState([], vm.provisioningState),
      tags,
    };
    if (vm.zones?.[0]) rec.zone = String(vm.zones[0]);
    if (a.privateIp) rec.privateIp = a.privateIp;
    if (a.publicIp) rec.publicIp = a.publicIp;
    if (host) rec.ssh = { host, port: 22, user: sshUser(this.config, "azureuser") };
    return rec;
  }

  private async listVms(clusterName = this.cluster): Promise<any[]> {
    const { compute } = await this.api();
    const out: any[] = [];
    await this.wrap("list VMs", async () => {
      for await (const vm of compute.virtualMachines.list(this.rg)) if (vm.tags?.[TAG_CLUSTER] === clusterName) out.push(vm);
    });
    return out;
  }

  async queryInstances(filter: QueryFilter): Promise<InstanceRecord[]> {
    const { compute } = await this.api();
    const vms = await this.listVms(filter.clusterName);
    if (!vms.length) return [];
    const addrs = await this.addresses();
    const recs = await Promise.all(
      vms.map(async (vm) => {
        const view = await this.getOrUndefined("get VM instance view", () => compute.virtualMachines.instanceView(this.rg, String(vm.name)));
        return this.record(vm, addrs, view?.statuses ?? []);
      }),
    );
    return recs
      .filter((r) => (!filter.kind || r.kind === filter.kind) && (filter.includeTerminated || r.state !== "terminated"))
      .sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  }

  async waitInstances(ids: string[], state: InstanceState, timeoutMs = 600_000): Promise<InstanceRecord[]> {
    if (!ids.length) return [];
    let last: InstanceRecord[] = [];
    return pollUntil(
      async () => {
        last = (await this.queryInstances({ clusterName: this.cluster, includeTerminated: true })).filter((r) => ids.includes(r.id));
        if (state === "terminated") return last.length === 0 ? [] : undefined;
        const missing = ids.filter((id) => !last.some((r) => r.id === id));
        if (missing.length) throw new UserError(`Azure VM ${missing.join(", ")} disappeared while tray waited for it to be ${state} (evicted or deleted).`);
        const dead = last.find((r) => r.state === "terminated");
        if (dead) throw new UserError(`Azure VM ${dead.name} failed to provision.`);
        return last.every((r) => r.state === state && (state !== "running" || r.privateIp)) ? last : undefined;
      },
      timeoutMs,
      () => new UserError(`Azure VMs did not become ${state} within ${Math.round(timeoutMs / 1000)} s: ${last.filter((r) => r.state !== state).map((r) => `${r.name} (${r.state})`).join(", ") || ids.join(", ")}.`),
    );
  }

  async stopInstances(ids: string[]): Promise<void> {
    const { compute } = await this.api();
    await Promise.all(ids.map((id) => this.wrap(`deallocate VM ${id}`, () => compute.virtualMachines.beginDeallocateAndWait(this.rg, id, this.lro))));
  }

  async terminateInstances(ids: string[]): Promise<RemovedResource[]> {
    if (!ids.length) return [];
    const { compute, network } = await this.api();
    const vms = (await this.listVms()).filter((vm) => ids.includes(String(vm.name)));
    const removed: RemovedResource[] = [];
    await Promise.all(
      vms.map(async (vm) => {
        const name = String(vm.name);
        await this.wrap(`delete VM ${name}`, () => compute.virtualMachines.beginDeleteAndWait(this.rg, name, this.lro));
        removed.push({ kind: "instance", id: name });
        // deleteOption "Delete" removes the NIC and the OS disk with the VM; delete them
        // explicitly too (they may have been created with other options), then the public IP
        const nicName = lastPart(vm.networkProfile?.networkInterfaces?.[0]?.id);
        const nic = nicName ? await this.getOrUndefined("get NIC", () => network.networkInterfaces.get(this.rg, nicName)) : undefined;
        if (nic) await this.deleteRetryingInUse(`delete NIC ${nicName}`, () => network.networkInterfaces.beginDeleteAndWait(this.rg, nicName, this.lro));
        if (nicName) removed.push({ kind: "nic", id: nicName });
        const pipName = `${name}-ip`;
        const pip = await this.getOrUndefined("get public IP", () => network.publicIPAddresses.get(this.rg, pipName));
        if (pip && pip.tags?.[TAG_CLUSTER] === this.cluster) {
          await this.deleteRetryingInUse(`delete public IP ${pipName}`, () => network.publicIPAddresses.beginDeleteAndWait(this.rg, pipName, this.lro));
          removed.push({ kind: "public-ip", id: pipName });
        }
        const diskName = String(vm.storageProfile?.osDisk?.name ?? "");
        if (diskName) {
          const disk = await this.getOrUndefined("get disk", () => compute.disks.get(this.rg, diskName));
          if (disk) await this.deleteRetryingInUse(`delete disk ${diskName}`, () => compute.disks.beginDeleteAndWait(this.rg, diskName, this.lro));
          removed.push({ kind: "disk", id: diskName });
        }
      }),
    );
    return removed.sort((a, b) => a.kind.localeCompare(b.kind) || a.id.localeCompare(b.id));
  }

  async cleanup(): Promise<RemovedResource[]> {
    const { compute, network } = await this.api();
    const removed: RemovedResource[] = [];
    const mine = (t: Record<string, string> | undefined) => t?.[TAG_CLUSTER] === this.cluster;
    // leftovers of nodes (an interrupted `up` or `down`)
    const nics: string[] = [];
    await this.wrap("list network interfaces", async () => {
      for await (const n of network.networkInterfaces.list(this.rg)) if (mine(n.tags) && !n.virtualMachine) nics.push(String(n.name));
    });
    for (const n of nics) {
      await this.deleteRetryingInUse(`delete NIC ${n}`, () => network.networkInterfaces.beginDeleteAndWait(this.rg, n, this.lro));
      removed.push({ kind: "nic", id: n });
    }
    const pips: string[] = [];
    await this.wrap("list public IPs", async () => {
      for await (const p of network.publicIPAddresses.list(this.rg)) if (mine(p.tags)) pips.push(String(p.name));
    });
    for (const p of pips) {
      await this.deleteRetryingInUse(`delete public IP ${p}`, () => network.publicIPAddresses.beginDeleteAndWait(this.rg, p, this.lro));
      removed.push({ kind: "public-ip", id: p });
    }
    const disks: string[] = [];
    await this.wrap("list disks", async () => {
      for await (const d of compute.disks.listByResourceGroup(this.rg)) if (mine(d.tags) && !d.managedBy) disks.push(String(d.name));
    });
    for (const d of disks) {
      await this.deleteRetryingInUse(`delete disk ${d}`, () => compute.disks.beginDeleteAndWait(this.rg, d, this.lro));
      removed.push({ kind: "disk", id: d });
    }
    // the network: the virtual network first (it holds the NSG through its subnet)
    const n = this.names;
    const vnet = await this.getOrUndefined("get virtual network", () => network.virtualNetworks.get(this.rg, n.vnet));
    if (vnet && mine(vnet.tags)) {
      await this.deleteRetryingInUse(`delete virtual network ${n.vnet}`, () => network.virtualNetworks.beginDeleteAndWait(this.rg, n.vnet, this.lro));
      removed.push({ kind: "network", id: n.vnet });
    }
    const nsg = await this.getOrUndefined("get network security group", () => network.networkSecurityGroups.get(this.rg, n.nsg));
    if (nsg && mine(nsg.tags)) {
      await this.deleteRetryingInUse(`delete network security group ${n.nsg}`, () => network.networkSecurityGroups.beginDeleteAndWait(this.rg, n.nsg, this.lro));
      removed.push({ kind: "security-group", id: n.nsg });
    }
    this.subnetId = undefined;
    return removed;
  }

  /** Deletes of network resources fail for a while after the VM that used them is gone. */
  private async deleteRetryingInUse(action: string, fn: () => Promise<unknown>): Promise<void> {
    const end = Date.now() + 180_000;
    for (let delay = 1000; ; delay = Math.min(10_000, delay * 2)) {
      try {
        await fn();
        return;
      } catch (e) {
        const info = classifyAzureError(e);
        if (info.cls === "not-found") return;
        if (!IN_USE.has(info.code) || Date.now() > end) throw this.userError(action, e);
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }
}

export function createProvider(config: ProviderClusterConfig, deps?: AzureProviderDeps): Provider {
  return new AzureProvider(config, deps);
}
