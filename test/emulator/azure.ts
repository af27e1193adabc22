// Azure Resource Manager emulator: the subset of Microsoft.Compute and Microsoft.Network that
// @azure/arm-compute and @azure/arm-network send for tray, over https (test CA from tls.ts),
// with real long-running operations: PUT answers 201 + Azure-AsyncOperation, DELETE and POST
// actions answer 202 + Azure-AsyncOperation + Location, and the operation URL reports
// InProgress / Succeeded / Failed with the cloud's error code.
// Credentials: a fake `az` on PATH (AzureCliCredential, part of DefaultAzureCredential's chain)
// prints the emulator's access token. Point tray at it with
// AZURE_RESOURCE_MANAGER_ENDPOINT=<url> and NODE_EXTRA_CA_CERTS=<caFile>.
import crypto from "node:crypto";
import fs from "node:fs";
import type http from "node:http";
import os from "node:os";
import path from "node:path";
import { EmulatorBase, emptyInventory, uuid, type EmulatorOptions, type Inventory } from "./common.js";
import type { Host } from "./hosts.js";
import { makeTestTls, type TestTls } from "./tls.js";

class ArmError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

interface ArmResource {
  id: string; // canonical casing as created
  type: string; // Microsoft.Network/networkSecurityGroups ...
  name: string;
  rg: string;
  location: string;
  tags: Record<string, string>;
  zones?: string[];
  properties: any;
  /** emulator bookkeeping (not serialized) */
  host?: Host;
  ownerCluster?: string;
  power?: "starting" | "running" | "deallocating" | "deallocated" | "stopped";
}

interface ArmOperation {
  id: string;
  status: "InProgress" | "Succeeded" | "Failed";
  error?: { code: string; message: string };
}

export interface AzureEmulatorOptions extends EmulatorOptions {
  subscriptionId?: string;
  location?: string;
  resourceGroups?: string[];
}

export class AzureEmulator extends EmulatorBase {
  readonly subscriptionId: string;
  readonly location: string;
  readonly resourceGroups: Set<string>;
  readonly resources = new Map<string, ArmResource>(); // lowercased id -> resource
  readonly operations = new Map<string, ArmOperation>();
  readonly token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.emulator." + crypto.randomBytes(12).toString("hex");
  tls!: TestTls;
  binDir = "";

  constructor(opts: AzureEmulatorOptions = {}) {
    super(opts);
    this.subscriptionId = opts.subscriptionId ?? "00000000-1111-2222-3333-444444444444";
    this.location = opts.location ?? "westus2";
    this.resourceGroups = new Set((opts.resourceGroups ?? ["tray-rg"]).map((r) => r.toLowerCase()));
  }

  override async start(): Promise<this> {
    this.tls = makeTestTls();
    this.opts.tls = { key: this.tls.key, cert: this.tls.cert };
    await super.start();
    // a fake Azure CLI: AzureCliCredential runs `az account get-access-token --output json --resource ...`
    this.binDir = fs.mkdtempSync(path.join(os.tmpdir(), "tray-az-emu-"));
    fs.writeFileSync(
      path.join(this.binDir, "az"),
      `#!/bin/sh
# fake az for the tray Azure emulator
case "$1 $2" in
  "account get-access-token")
    printf '{"accessToken":"%s","expiresOn":"2099-01-01 00:00:00.000000","expires_on":%s,"subscription":"%s","tenant":"%s","tokenType":"Bearer"}\\n' \\
      "${this.token}" "$(( $(date +%s) + 3600 ))" "${this.subscriptionId}" "11111111-2222-3333-4444-555555555555" ;;
  *) echo "az (emulator): unsupported: $*" >&2; exit 2 ;;
esac
`,
      { mode: 0o755 },
    );
    return this;
  }

  override async stop(): Promise<void> {
    await super.stop();
    this.tls?.cleanup();
    if (this.binDir) fs.rmSync(this.binDir, { recursive: true, force: true });
  }

  /** Environment for a process whose SDK should talk to this emulator. */
  env(): Record<string, string> {
    return {
      AZURE_RESOURCE_MANAGER_ENDPOINT: this.url,
      NODE_EXTRA_CA_CERTS: this.tls.caFile,
      PATH: `${this.binDir}:${process.env.PATH ?? ""}`,
      // only the CLI credential of DefaultAzureCredential's chain: no managed-identity probe
      AZURE_TOKEN_CREDENTIALS: "AzureCliCredential",
    };
  }

  private opUrl(id: string): string {
    return `${this.url}/subscriptions/${this.subscriptionId}/providers/Microsoft.Resources/locations/${this.location}/operationStatuses/${id}?api-version=2022-01-01`;
  }

  private newOp(): ArmOperation & { finish(err?: { code: string; message: string }): void } {
    const op: any = { id: uuid(), status: "InProgress" };
    op.finish = (err?: { code: string; message: string }) => {
      op.status = err ? "Failed" : "Succeeded";
      if (err) op.error = err;
    };
    this.operations.set(op.id, op);
    return op;
  }

  protected async handle(req: http.IncomingMessage, res: http.ServerResponse, body: string): Promise<void> {
    const url = new URL(req.url ?? "/", "https://x");
    const method = req.method ?? "GET";
    let action = `${method} ${url.pathname}`;
    const send = (status: number, obj: unknown, headers: Record<string, string> = {}) => {
      this.log.push({ method, path: url.pathname, action, status });
      res.writeHead(status, { "content-type": "application/json; charset=utf-8", "x-ms-request-id": uuid(), ...headers });
      res.end(obj === undefined ? "" : JSON.stringify(obj));
    };
    try {
      if (String(req.headers.authorization ?? "") !== `Bearer ${this.token}`) {
        throw new ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.");
      }
      const p = url.pathname.replace(/\/+$/, "");
      // operation status
      let m = p.match(/^\/subscriptions\/[^/]+\/providers\/Microsoft\.Resources\/locations\/[^/]+\/operationStatuses\/([^/]+)$/i);
      if (m) {
        action = "operationStatus";
        const op = this.operations.get(m[1]!);
        if (!op) throw new ArmError(404, "NotFound", "operation not found");
        if (url.searchParams.get("kind") === "location") return op.status === "InProgress" ? send(202, undefined, { location: this.opUrl(op.id) + "&kind=location", "retry-after": "0" }) : send(200, {});
        return send(200, { name: op.id, status: op.status, ...(op.error ? { error: op.error } : {}) }, op.status === "InProgress" ? { "retry-after": "0" } : {});
      }
      m = p.match(/^\/subscriptions\/([^/]+)\/resourceGroups\/([^/]+)\/providers\/(Microsoft\.(?:Compute|Network))\/([^/]+)(?:\/([^/]+))?(?:\/([^/]+))?(?:\/([^/]+))?$/i);
      if (!m) throw new ArmError(404, "InvalidResourceType", `emulator: no route for ${method} ${p}`);
      const [, sub, rg, ns, type, name, sub1, sub2] = m as unknown as string[];
      if (sub !== this.subscriptionId) throw new ArmError(404, "SubscriptionNotFound", `The subscription '${sub}' could not be found.`);
      if (!this.resourceGroups.has(rg!.toLowerCase())) throw new ArmError(404, "ResourceGroupNotFound", `Resource group '${rg}' could not be found.`);
      const fullType = `${ns}/${type}`;
      action = `${method} ${fullType}${sub1 ? "/" + sub1 : ""}${sub2 ? "/" + sub2 : ""}`;
      const fault = this.takeFault(action);
      if (fault === "throttle") {
        return send(429, { error: { code: "TooManyRequests", message: "The request is being throttled as the limit has been reached for operation type - Write_ObservationWindow_00:01:00." } }, { "retry-after": "1" });
      }
      if (fault === "internal") return send(500, { error: { code: "InternalServerError", message: "Encountered internal server error. Diagnostic information: timestamp '...'." } });
      if (!name) {
        if (method !== "GET") throw new ArmError(405, "MethodNotAllowed", "method not allowed");
        const list = [...this.resources.values()].filter((r) => r.type.toLowerCase() === fullType.toLowerCase() && r.rg.toLowerCase() === rg!.toLowerCase());
        return send(200, { value: list.map((r) => this.json(r)) });
      }
      const id = `/subscriptions/${sub}/resourceGroups/${rg}/providers/${ns}/${type}/${name}`;
      const key = id.toLowerCase();
      const existing = this.resources.get(key);
      // child paths
      if (sub1) {
        if (!existing) throw new ArmError(404, "ResourceNotFound", `The Resource '${ns}/${type}/${name}' under resource group '${rg}' was not found.`);
        if (/^instanceView$/i.test(sub1) && method === "GET") return send(200, this.instanceView(existing));
        if (/^deallocate$|^powerOff$/i.test(sub1) && method === "POST") return this.deallocate(existing, send);
        if (/^subnets$/i.test(sub1) && sub2 && method === "GET") {
          const sn = (existing.properties.subnets ?? []).find((s: any) => s.name.toLowerCase() === sub2.toLowerCase());
          if (!sn) throw new ArmError(404, "NotFound", `Resource ${id}/subnets/${sub2} not found.`);
          return send(200, this.subnetJson(existing, sn));
        }
        throw new ArmError(404, "InvalidResourceType", `emulator: no route for ${method} ${p}`);
      }
      if (method === "GET") {
        if (!existing) throw new ArmError(404, "ResourceNotFound", `The Resource '${ns}/${type}/${name}' under resource group '${rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix`);
        const j: any = this.json(existing);
        if (url.searchParams.get("$expand") === "instanceView" && existing.type === "Microsoft.Compute/virtualMachines") j.properties.instanceView = this.instanceView(existing);
        return send(200, j);
      }
      if (method === "PUT") return this.put(id, fullType, rg!, name, JSON.parse(body || "{}"), existing, send);
      if (method === "PATCH") {
        if (!existing) throw new ArmError(404, "ResourceNotFound", `The Resource '${ns}/${type}/${name}' under resource group '${rg}' was not found.`);
        const b = JSON.parse(body || "{}");
        if (b.tags) existing.tags = b.tags;
        return send(200, this.json(existing));
      }
      if (method === "DELETE") {
        if (!existing) return send(204, undefined);
        return this.delete(existing, send);
      }
      throw new ArmError(405, "MethodNotAllowed", "method not allowed");
    } catch (e) {
      if (e instanceof ArmError) return send(e.status, { error: { code: e.code, message: e.message } });
      if (e instanceof SyntaxError) return send(400, { error: { code: "InvalidRequestContent", message: "The request content was invalid and could not be deserialized." } });
      throw e;
    }
  }

  private ref(id: string | undefined, what: string): ArmResource {
    const r = id ? this.resources.get(id.toLowerCase()) : undefined;
    if (!r) throw new ArmError(400, "InvalidResourceReference", `Resource ${id} referenced by ${what} was not found.`);
    return r;
  }

  private put(id: string, type: string, rg: string, name: string, b: any, existing: ArmResource | undefined, send: (s: number, o: unknown, h?: Record<string, string>) => void): void {
    const props = b.properties ?? {};
    const r: ArmResource = existing ?? { id, type, name, rg, location: String(b.location ?? this.location), tags: {}, properties: {} };
    r.tags = b.tags ?? {};
    if (b.zones) r.zones = b.zones;
    const tType = type.toLowerCase();
    const op = this.newOp();
    if (tType === "microsoft.network/networksecuritygroups") {
      r.properties = { securityRules: props.securityRules ?? [], provisioningState: "Succeeded" };
    } else if (tType === "microsoft.network/virtualnetworks") {
      const subnets = (props.subnets ?? []).map((s: any) => {
        if (s.properties?.networkSecurityGroup?.id) this.ref(s.properties.networkSecurityGroup.id, `subnet ${s.name}`);
        return { name: s.name, properties: { addressPrefix: s.properties?.addressPrefix, networkSecurityGroup: s.properties?.networkSecurityGroup, provisioningState: "Succeeded" } };
      });
      r.properties = { addressSpace: props.addressSpace, subnets, provisioningState: "Succeeded" };
    } else if (tType === "microsoft.network/publicipaddresses") {
      r.properties = { publicIPAllocationMethod: props.publicIPAllocationMethod ?? "Static", publicIPAddressVersion: "IPv4", provisioningState: "Succeeded" };
      r.zones = b.zones;
      (r as any).sku = b.sku ?? { name: "Standard" };
    } else if (tType === "microsoft.network/networkinterfaces") {
      const ipc = props.ipConfigurations?.[0];
      const subnetId: string | undefined = ipc?.properties?.subnet?.id;
      const vnetId = subnetId?.replace(/\/subnets\/[^/]+$/i, "");
      const vnet = this.ref(vnetId, `network interface ${name}`);
      if (!(vnet.properties.subnets ?? []).some((s: any) => subnetId!.toLowerCase().endsWith(`/subnets/${s.name}`.toLowerCase()))) {
        throw new ArmError(400, "InvalidResourceReference", `Subnet ${subnetId} referenced by ${name} was not found.`);
      }
      const pipId = ipc?.properties?.publicIPAddress?.id;
      if (pipId) this.ref(pipId, `network interface ${name}`);
      r.properties = {
        ipConfigurations: [{ name: ipc?.name ?? "ipconfig1", properties: { subnet: { id: subnetId }, publicIPAddress: pipId ? { id: pipId } : undefined, privateIPAllocationMethod: "Dynamic", primary: true } }],
        networkSecurityGroup: props.networkSecurityGroup,
        virtualMachine: existing?.properties?.virtualMachine,
        provisioningState: "Succeeded",
      };
    } else if (tType === "microsoft.compute/virtualmachines") {
      return this.putVm(r, b, op, send);
    } else if (tType === "microsoft.compute/disks") {
      r.properties = { ...props, provisioningState: "Succeeded", diskState: "Unattached" };
    } else {
      throw new ArmError(400, "InvalidResourceType", `emulator does not support ${type}`);
    }
    this.resources.set(id.toLowerCase(), r);
    op.finish();
    const j: any = this.json(r);
    j.properties.provisioningState = "Updating";
    send(existing ? 200 : 201, j, { "azure-asyncoperation": this.opUrl(op.id), "retry-after": "0" });
  }

  private putVm(r: ArmResource, b: any, op: ReturnType<AzureEmulator["newOp"]>, send: (s: number, o: unknown, h?: Record<string, string>) => void): void {
    const props = b.properties ?? {};
    if (this.resources.has(r.id.toLowerCase())) {
      const cur = this.resources.get(r.id.toLowerCase())!;
      if (cur.properties.provisioningState === "Creating" || cur.properties.provisioningState === "Deleting") {
        throw new ArmError(409, "AnotherOperationInProgress", `Operation 'Create or Update VM' is not allowed since another operation is in progress on VM '${cur.name}'.`);
      }
      if (cur.properties.provisioningState === "Succeeded") {
        // an update of an existing VM: tags only in this emulator
        cur.tags = b.tags ?? cur.tags;
        op.finish();
        return send(200, this.json(cur), { "azure-asyncoperation": this.opUrl(op.id), "retry-after": "0" });
      }
    }
    const cf = this.takeCreateFault();
    if (cf === "deny") {
      throw new ArmError(403, "AuthorizationFailed", `The client 'tray' with object id '00000000-0000-0000-0000-000000000000' does not have authorization to perform action 'Microsoft.Compute/virtualMachines/write' over scope '${r.id}' or the scope is invalid.`);
    }
    if (cf === "quota") {
      throw new ArmError(409, "OperationNotAllowed", `Operation could not be completed as it results in exceeding approved Total Regional Cores quota. Location: ${r.location}, Current Limit: 10, Current Usage: 8, Additional Required: 4.`);
    }
    const nicRefs: any[] = props.networkProfile?.networkInterfaces ?? [];
    if (!nicRefs.length) throw new ArmError(400, "InvalidParameter", "Required parameter 'networkProfile' is missing (null).");
    const nic = this.ref(nicRefs[0].id, `virtual machine ${r.name}`);
    if (nic.properties.virtualMachine && nic.properties.virtualMachine.id.toLowerCase() !== r.id.toLowerCase()) {
      throw new ArmError(400, "NicInUse", `Network Interface ${nic.id} is used by existing resource ${nic.properties.virtualMachine.id}.`);
    }
    const osp = props.osProfile ?? {};
    const user = String(osp.adminUsername ?? "");
    if (!user) throw new ArmError(400, "InvalidParameter", "Required parameter 'adminUsername' is missing (null).");
    const keys: { path: string; keyData: string }[] = osp.linuxConfiguration?.ssh?.publicKeys ?? [];
    const zone = String((b.zones ?? [])[0] ?? "");
    const osDiskName = String(props.storageProfile?.osDisk?.name ?? `${r.name}_OsDisk_1_${crypto.randomBytes(16).toString("hex")}`);
    const diskId = `/subscriptions/${this.subscriptionId}/resourceGroups/${r.rg}/providers/Microsoft.Compute/disks/${osDiskName}`;
    r.properties = {
      vmId: uuid(),
      hardwareProfile: props.hardwareProfile,
      storageProfile: {
        imageReference: props.storageProfile?.imageReference,
        osDisk: {
          osType: "Linux",
          name: osDiskName,
          createOption: "FromImage",
          caching: "ReadWrite",
          deleteOption: props.storageProfile?.osDisk?.deleteOption ?? "Detach",
          diskSizeGB: props.storageProfile?.osDisk?.diskSizeGB ?? 30,
          managedDisk: { id: diskId, storageAccountType: props.storageProfile?.osDisk?.managedDisk?.storageAccountType ?? "Premium_LRS" },
        },
      },
      osProfile: { computerName: osp.computerName ?? r.name, adminUsername: user, linuxConfiguration: osp.linuxConfiguration, allowExtensionOperations: true },
      networkProfile: { networkInterfaces: nicRefs.map((n) => ({ id: n.id, properties: { primary: true, deleteOption: n.properties?.deleteOption ?? "Detach" } })) },
      priority: props.priority,
      evictionPolicy: props.evictionPolicy,
      provisioningState: "Creating",
    };
    r.power = "starting";
    r.ownerCluster = (b.tags ?? {})["tray-cluster-name"];
    this.resources.set(r.id.toLowerCase(), r);
    if (zone && this.zoneHasNoCapacity(zone)) {
      r.properties.provisioningState = "Failed";
      r.power = "stopped";
      op.finish({
        code: "ZonalAllocationFailed",
        message: `Allocation failed. We do not have sufficient capacity for the requested VM size in this zone. Read more about improving likelihood of allocation success at http://aka.ms/allocation-guidance`,
      });
      const j: any = this.json(r);
      j.properties.provisioningState = "Creating";
      return send(201, j, { "azure-asyncoperation": this.opUrl(op.id), "retry-after": "0" });
    }
    nic.properties.virtualMachine = { id: r.id };
    this.resources.set(diskId.toLowerCase(), {
      id: diskId,
      type: "Microsoft.Compute/disks",
      name: osDiskName,
      rg: r.rg,
      location: r.location,
      tags: {}, // implicit OS disks carry no tags (as in Azure); tray tags them afterwards
      ...(zone ? { zones: [zone] } : {}),
      properties: { diskSizeGB: r.properties.storageProfile.osDisk.diskSizeGB, diskState: "Attached", provisioningState: "Succeeded", osType: "Linux" },
      ownerCluster: r.ownerCluster,
      managedBy: r.id,
    } as any);
    const unreachable = this.takeUnreachable();
    const authorized = keys.filter((k) => k.path === `/home/${user}/.ssh/authorized_keys`).map((k) => k.keyData.trim());
    const created = JSON.parse(JSON.stringify(this.json(r)));
    this.boot({ user, authorizedKeys: authorized, hostname: String(r.properties.osProfile.computerName), reachable: !unreachable }, (host, err) => {
      if (this.resources.get(r.id.toLowerCase()) !== r || r.power !== "starting") return void this.destroyHost(host);
      if (!host) {
        r.properties.provisioningState = "Failed";
        op.finish({ code: "OSProvisioningInternalError", message: String(err) });
        return;
      }
      r.host = host;
      r.power = "running";
      r.properties.provisioningState = "Succeeded";
      nic.properties.ipConfigurations[0].properties.privateIPAddress = host.privateIp;
      const pipId = nic.properties.ipConfigurations[0].properties.publicIPAddress?.id;
      const pip = pipId ? this.resources.get(pipId.toLowerCase()) : undefined;
      if (pip) {
        pip.properties.ipAddress = host.publicIp;
        pip.properties.ipConfiguration = { id: `${nic.id}/ipConfigurations/ipconfig1` };
      }
      op.finish();
    });
    send(201, created, { "azure-asyncoperation": this.opUrl(op.id), "retry-after": "0" });
  }

  private delete(r: ArmResource, send: (s: number, o: unknown, h?: Record<string, string>) => void): void {
    const t = r.type.toLowerCase();
    const inUse = (msg: string, code: string) => {
      throw new ArmError(400, code, msg);
    };
    if (t === "microsoft.network/networkinterfaces" && r.properties.virtualMachine && this.resources.has(r.properties.virtualMachine.id.toLowerCase())) {
      inUse(`Network Interface ${r.id} is used by existing resource ${r.properties.virtualMachine.id}. In order to delete the network interface, it must be dissociated from the resource.`, "NicInUse");
    }
    if (t === "microsoft.network/publicipaddresses") {
      const user = [...this.resources.values()].find((x) => x.type === "Microsoft.Network/networkInterfaces" && x.properties.ipConfigurations?.[0]?.properties?.publicIPAddress?.id?.toLowerCase() === r.id.toLowerCase());
      if (user) inUse(`Public IP address ${r.id} can not be deleted since it is still allocated to resource ${user.id}/ipConfigurations/ipconfig1.`, "PublicIPAddressCannotBeDeleted");
    }
    if (t === "microsoft.network/virtualnetworks") {
      const user = [...this.resources.values()].find((x) => x.type === "Microsoft.Network/networkInterfaces" && x.properties.ipConfigurations?.[0]?.properties?.subnet?.id?.toLowerCase().startsWith(r.id.toLowerCase() + "/"));
      if (user) inUse(`Subnet default is in use by ${user.id}/ipConfigurations/ipconfig1 and cannot be deleted.`, "InUseSubnetCannotBeDeleted");
    }
    if (t === "microsoft.network/networksecuritygroups") {
      const user = [...this.resources.values()].find((x) => x.type === "Microsoft.Network/virtualNetworks" && (x.properties.subnets ?? []).some((s: any) => s.properties?.networkSecurityGroup?.id?.toLowerCase() === r.id.toLowerCase()));
      if (user) inUse(`Network security group ${r.id} cannot be deleted because it is in use by the following resources: ${user.id}/subnets/default.`, "InUseNetworkSecurityGroupCannotBeDeleted");
    }
    if (t === "microsoft.compute/disks" && (r as any).managedBy && this.resources.has(String((r as any).managedBy).toLowerCase())) {
      inUse(`Disk ${r.name} is attached to VM ${(r as any).managedBy}.`, "OperationNotAllowed");
    }
    const op = this.newOp();
    if (t === "microsoft.compute/virtualmachines") {
      r.properties.provisioningState = "Deleting";
      r.power = "deallocating";
      const host = r.host;
      r.host = undefined;
      this.track(
        this.destroyHost(host).then(() => {
          this.resources.delete(r.id.toLowerCase());
          for (const n of r.properties.networkProfile?.networkInterfaces ?? []) {
            const nic = this.resources.get(String(n.id).toLowerCase());
            if (!nic) continue;
            if (n.properties?.deleteOption === "Delete") this.resources.delete(nic.id.toLowerCase());
            else {
              nic.properties.virtualMachine = undefined;
              nic.properties.ipConfigurations[0].properties.privateIPAddress = undefined;
            }
          }
          const disk = this.resources.get(String(r.properties.storageProfile?.osDisk?.managedDisk?.id ?? "").toLowerCase());
          if (disk) {
            if (r.properties.storageProfile.osDisk.deleteOption === "Delete") this.resources.delete(disk.id.toLowerCase());
            else {
              (disk as any).managedBy = undefined;
              disk.properties.diskState = "Unattached";
            }
          }
          op.finish();
        }),
      );
    } else {
      this.resources.delete(r.id.toLowerCase());
      op.finish();
    }
    send(202, undefined, { "azure-asyncoperation": this.opUrl(op.id), location: this.opUrl(op.id) + "&kind=location", "retry-after": "0" });
  }

  private deallocate(r: ArmResource, send: (s: number, o: unknown, h?: Record<string, string>) => void): void {
    const op = this.newOp();
    r.power = "deallocating";
    const host = r.host;
    r.host = undefined;
    this.track(
      this.destroyHost(host).then(() => {
        r.power = "deallocated";
        op.finish();
      }),
    );
    send(202, undefined, { "azure-asyncoperation": this.opUrl(op.id), location: this.opUrl(op.id) + "&kind=location", "retry-after": "0" });
  }

  private instanceView(r: ArmResource) {
    const power = r.power ?? "running";
    return {
      computerName: r.properties.osProfile?.computerName,
      statuses: [
        { code: `ProvisioningState/${String(r.properties.provisioningState).toLowerCase()}`, level: "Info", displayStatus: `Provisioning ${String(r.properties.provisioningState).toLowerCase()}` },
        { code: `PowerState/${power}`, level: "Info", displayStatus: `VM ${power}` },
      ],
    };
  }

  private subnetJson(vnet: ArmResource, s: any) {
    return { id: `${vnet.id}/subnets/${s.name}`, name: s.name, type: "Microsoft.Network/virtualNetworks/subnets", properties: s.properties };
  }

  private json(r: ArmResource): any {
    const props = JSON.parse(JSON.stringify(r.properties ?? {}));
    if (r.type === "Microsoft.Network/virtualNetworks") {
      props.subnets = (r.properties.subnets ?? []).map((s: any) => this.subnetJson(r, s));
    }
    if (r.type === "Microsoft.Network/networkInterfaces") {
      props.ipConfigurations = (props.ipConfigurations ?? []).map((c: any) => ({ id: `${r.id}/ipConfigurations/${c.name}`, ...c }));
    }
    return {
      id: r.id,
      name: r.name,
      type: r.type,
      location: r.location,
      tags: r.tags,
      ...(r.zones ? { zones: r.zones } : {}),
      ...((r as any).sku ? { sku: (r as any).sku } : {}),
      ...((r as any).managedBy ? { managedBy: (r as any).managedBy } : {}),
      properties: props,
    };
  }

  inventory(cluster: string): Inventory {
    const inv = emptyInventory();
    for (const r of this.resources.values()) {
      const mine = r.tags["tray-cluster-name"] === cluster || r.ownerCluster === cluster;
      if (!mine) continue;
      switch (r.type) {
        case "Microsoft.Compute/virtualMachines":
          inv.instances.push(r.name);
          break;
        case "Microsoft.Compute/disks":
          inv.disks.push(r.name);
          break;
        case "Microsoft.Network/networkInterfaces":
          inv.nics.push(r.name);
          break;
        case "Microsoft.Network/publicIPAddresses":
          inv.publicIps.push(r.name);
          break;
        case "Microsoft.Network/networkSecurityGroups":
          inv.securityGroups.push(r.name);
          break;
        case "Microsoft.Network/virtualNetworks":
          inv.networks.push(r.name);
          break;
      }
    }
    return inv;
  }
}
