// EC2 emulator: the Query API subset @aws-sdk/client-ec2 sends for tray (form-encoded POST,
// Action=..., XML answers in the 2016-11-15 namespace, errors as <Response><Errors>...).
// Point the SDK at it with AWS_ENDPOINT_URL_EC2=<url>. One region, three zones with a
// default VPC and one default subnet per zone, one Ubuntu image.
import type http from "node:http";
import { EmulatorBase, emptyInventory, rid, uuid, type EmulatorOptions, type Inventory } from "./common.js";
import type { Host } from "./hosts.js";

const NS = "http://ec2.amazonaws.com/doc/2016-11-15/";
const OWNER = "123456789012";

class Ec2Error extends Error {
  constructor(
    public code: string,
    message: string,
    public status = 400,
  ) {
    super(message);
  }
}

type Tags = Record<string, string>;

interface Ec2Instance {
  id: string;
  imageId: string;
  type: string;
  keyName?: string;
  subnetId: string;
  zone: string;
  sgIds: string[];
  state: "pending" | "running" | "stopping" | "stopped" | "shutting-down" | "terminated";
  tags: Tags;
  launchTime: string;
  volumeId: string;
  deviceName: string;
  deleteVolume: boolean;
  eniId: string;
  spot: boolean;
  host?: Host;
  unreachable: boolean;
}

/** Parse "A.1.B=x&A.1.C.2=y" into { A: [ { B: "x", C: [ , "y"] } ] } (1-based lists). */
export function parseQuery(body: string): Record<string, any> {
  const out: Record<string, any> = {};
  for (const [k, v] of new URLSearchParams(body)) {
    const parts = k.split(".");
    let cur: any = out;
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      const last = i === parts.length - 1;
      const next = parts[i + 1];
      const key: string | number = /^\d+$/.test(p) ? Number(p) - 1 : p;
      if (last) cur[key] = v;
      else cur = cur[key] ??= next !== undefined && /^\d+$/.test(next) ? [] : {};
    }
  }
  return out;
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Objects become elements, arrays become <item> lists, undefined is left out. */
function xml(v: unknown): string {
  if (v === undefined || v === null) return "";
  if (Array.isArray(v)) return v.map((i) => `<item>${xml(i)}</item>`).join("");
  if (typeof v === "object") {
    return Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .map(([k, x]) => `<${k}>${xml(x)}</${k}>`)
      .join("");
  }
  return esc(String(v));
}

function tagSet(tags: Tags) {
  return Object.entries(tags).map(([key, value]) => ({ key, value }));
}

function list<T = any>(v: unknown): T[] {
  return Array.isArray(v) ? (v.filter((x) => x !== undefined) as T[]) : [];
}

function tagsFromSpecs(params: Record<string, any>, resourceType: string): Tags {
  const tags: Tags = {};
  for (const spec of list(params.TagSpecification)) {
    if (spec.ResourceType !== resourceType) continue;
    for (const t of list(spec.Tag)) tags[t.Key] = t.Value ?? "";
  }
  return tags;
}

interface Filter {
  name: string;
  values: string[];
}

function filtersOf(params: Record<string, any>): Filter[] {
  return list(params.Filter).map((f: any) => ({ name: f.Name, values: list(f.Value) }));
}

function glob(pattern: string, s: string): boolean {
  const re = new RegExp("^" + pattern.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*") + "$");
  return re.test(s);
}

/** A resource matches when every filter matches one of its values; `fields` maps filter names to values. */
function matches(filters: Filter[], tags: Tags, fields: Record<string, string | string[] | undefined>): boolean {
  for (const f of filters) {
    let vals: string[];
    if (f.name.startsWith("tag:")) vals = tags[f.name.slice(4)] !== undefined ? [tags[f.name.slice(4)]!] : [];
    else if (f.name === "tag-key") vals = Object.keys(tags);
    else if (f.name in fields) {
      const v = fields[f.name];
      vals = v === undefined ? [] : Array.isArray(v) ? v : [v];
    } else throw new Ec2Error("InvalidParameterValue", `The filter '${f.name}' is invalid`);
    if (!f.values.some((p) => vals.some((v) => glob(p, v)))) return false;
  }
  return true;
}

const STATE_CODE: Record<Ec2Instance["state"], number> = {
  pending: 0,
  running: 16,
  "shutting-down": 32,
  terminated: 48,
  stopping: 64,
  stopped: 80,
};

export interface AwsEmulatorOptions extends EmulatorOptions {
  region?: string;
}

export class AwsEmulator extends EmulatorBase {
  readonly region: string;
  readonly zones: string[];
  readonly vpcId = "vpc-0d3fa017";
  readonly subnets: { id: string; zone: string; cidr: string }[];
  readonly imageId = "ami-0ubuntu22040000001";
  securityGroups = new Map<string, { id: string; name: string; description: string; vpcId: string; tags: Tags; ingress: any[] }>();
  keyPairs = new Map<string, { id: string; name: string; publicKey: string; fingerprint: string; tags: Tags }>();
  instances = new Map<string, Ec2Instance>();
  volumes = new Map<string, { id: string; zone: string; size: number; state: "in-use" | "available"; tags: Tags; instanceId?: string }>();
  nics = new Map<string, { id: string; subnetId: string; state: "in-use" | "available"; tags: Tags; instanceId?: string; privateIp?: string }>();

  constructor(opts: AwsEmulatorOptions = {}) {
    super(opts);
    this.region = opts.region ?? "us-east-1";
    this.zones = ["a", "b", "c"].map((z) => this.region + z);
    this.subnets = this.zones.map((zone, i) => ({ id: `subnet-0${i + 1}aa${i + 1}bb`, zone, cidr: `172.31.${i * 16}.0/20` }));
  }

  /** Environment for a process whose SDK should talk to this emulator. */
  env(): Record<string, string> {
    return {
      AWS_ENDPOINT_URL_EC2: this.url,
      AWS_ACCESS_KEY_ID: "AKIAEMULATOR0000TRAY",
      AWS_SECRET_ACCESS_KEY: "emulator-secret",
      AWS_REGION: this.region,
      AWS_EC2_METADATA_DISABLED: "true",
    };
  }

  protected handle(req: http.IncomingMessage, res: http.ServerResponse, body: string): void {
    const params = parseQuery(body);
    const action = String(params.Action ?? "");
    const requestId = uuid();
    const reply = (status: number, text: string) => {
      this.log.push({ method: req.method ?? "", path: req.url ?? "", action, status });
      res.writeHead(status, { "content-type": "text/xml;charset=UTF-8", "x-amzn-requestid": requestId });
      res.end(text);
    };
    const fail = (e: Ec2Error) =>
      reply(
        e.status,
        `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${esc(e.code)}</Code><Message>${esc(e.message)}</Message></Error></Errors><RequestID>${requestId}</RequestID></Response>`,
      );
    if (!/AWS4-HMAC-SHA256 Credential=AKIA/.test(String(req.headers.authorization ?? ""))) {
      return fail(new Ec2Error("AuthFailure", "AWS was not able to validate the provided access credentials", 401));
    }
    const fault = this.takeFault(action);
    if (fault === "throttle") return fail(new Ec2Error("RequestLimitExceeded", "Request limit exceeded.", 503));
    if (fault === "internal") return fail(new Ec2Error("InternalError", "An internal error has occurred", 500));
    const fn = (this as any)["op" + action] as ((p: Record<string, any>) => Record<string, unknown>) | undefined;
    if (!fn) return fail(new Ec2Error("InvalidAction", `The action ${action} is not valid for this web service.`));
    try {
      const result = fn.call(this, params);
      if (action === "RunInstances" && this.takeLostAnswer()) return fail(new Ec2Error("InternalError", "An internal error has occurred", 500));
      reply(200, `<?xml version="1.0" encoding="UTF-8"?>\n<${action}Response xmlns="${NS}"><requestId>${requestId}</requestId>${xml(result)}</${action}Response>`);
    } catch (e) {
      if (e instanceof Ec2Error) return fail(e);
      throw e;
    }
  }

  // ------------------------------------------------------------------ network

  opDescribeVpcs(p: Record<string, any>) {
    const vpcs = [{ id: this.vpcId, isDefault: "true", cidr: "172.31.0.0/16" }].filter((v) =>
      matches(filtersOf(p), {}, { "is-default": v.isDefault, isDefault: v.isDefault, "vpc-id": v.id }),
    );
    return { vpcSet: vpcs.map((v) => ({ vpcId: v.id, state: "available", cidrBlock: v.cidr, isDefault: v.isDefault, ownerId: OWNER })) };
  }

  opDescribeSubnets(p: Record<string, any>) {
    const ids = list<string>(p.SubnetId);
    for (const id of ids) if (!this.subnets.some((s) => s.id === id)) throw new Ec2Error("InvalidSubnetID.NotFound", `The subnet ID '${id}' does not exist`);
    const subnets = this.subnets.filter(
      (s) =>
        (!ids.length || ids.includes(s.id)) &&
        matches(filtersOf(p), {}, { "vpc-id": this.vpcId, "default-for-az": "true", "availability-zone": s.zone, "subnet-id": s.id }),
    );
    return {
      subnetSet: subnets.map((s) => ({
        subnetId: s.id,
        state: "available",
        vpcId: this.vpcId,
        cidrBlock: s.cidr,
        availabilityZone: s.zone,
        defaultForAz: "true",
        mapPublicIpOnLaunch: "true",
        ownerId: OWNER,
      })),
    };
  }

  opDescribeImages(p: Record<string, any>) {
    const ids = list<string>(p.ImageId);
    const owners = list<string>(p.Owner);
    const img = { id: this.imageId, name: "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20260101", owner: "099720108477" };
    for (const id of ids) if (id !== img.id) throw new Ec2Error("InvalidAMIID.NotFound", `The image id '[${id}]' does not exist`);
    const ok = (!owners.length || owners.includes(img.owner)) && matches(filtersOf(p), {}, { name: img.name, state: "available", "image-id": img.id });
    return {
      imagesSet: ok
        ? [
            {
              imageId: img.id,
              imageLocation: `${img.owner}/${img.name}`,
              imageState: "available",
              imageOwnerId: img.owner,
              creationDate: "2026-01-01T00:00:00.000Z",
              isPublic: "true",
              architecture: "x86_64",
              imageType: "machine",
              name: img.name,
              rootDeviceType: "ebs",
              rootDeviceName: "/dev/sda1",
              virtualizationType: "hvm",
            },
          ]
        : [],
    };
  }

  opCreateSecurityGroup(p: Record<string, any>) {
    const name = String(p.GroupName);
    const vpcId = String(p.VpcId ?? this.vpcId);
    if ([...this.securityGroups.values()].some((g) => g.name === name && g.vpcId === vpcId)) {
      throw new Ec2Error("InvalidGroup.Duplicate", `The security group '${name}' already exists for VPC '${vpcId}'`);
    }
    const id = rid("sg-");
    this.securityGroups.set(id, { id, name, description: String(p.GroupDescription ?? ""), vpcId, tags: tagsFromSpecs(p, "security-group"), ingress: [] });
    return { return: "true", groupId: id };
  }

  private sg(id: string) {
    const g = this.securityGroups.get(id);
    if (!g) throw new Ec2Error("InvalidGroup.NotFound", `The security group '${id}' does not exist`);
    return g;
  }

  opAuthorizeSecurityGroupIngress(p: Record<string, any>) {
    const g = this.sg(String(p.GroupId));
    for (const perm of list(p.IpPermissions)) {
      const rule = {
        ipProtocol: String(perm.IpProtocol),
        fromPort: perm.FromPort !== undefined ? Number(perm.FromPort) : undefined,
        toPort: perm.ToPort !== undefined ? Number(perm.ToPort) : undefined,
        cidrs: list(perm.IpRanges).map((r: any) => String(r.CidrIp)),
        groups: list(perm.Groups).map((r: any) => String(r.GroupId)),
      };
      const dup = g.ingress.some((r) => JSON.stringify(r) === JSON.stringify(rule));
      if (dup) throw new Ec2Error("InvalidPermission.Duplicate", `the specified rule "peer: ${rule.cidrs[0] ?? rule.groups[0]}, ${rule.ipProtocol}" already exists`);
      g.ingress.push(rule);
    }
    return { return: "true" };
  }

  opRevokeSecurityGroupIngress(p: Record<string, any>) {
    const g = this.sg(String(p.GroupId));
    for (const perm of list(p.IpPermissions)) {
      const cidrs = list(perm.IpRanges).map((r: any) => String(r.CidrIp));
      const groups = list(perm.Groups).map((r: any) => String(r.GroupId));
      const from = perm.FromPort !== undefined ? Number(perm.FromPort) : undefined;
      const to = perm.ToPort !== undefined ? Number(perm.ToPort) : undefined;
      let found = false;
      for (const r of g.ingress) {
        if (r.ipProtocol !== String(perm.IpProtocol) || r.fromPort !== from || r.toPort !== to) continue;
        const before = r.cidrs.length + r.groups.length;
        r.cidrs = r.cidrs.filter((c: string) => !cidrs.includes(c));
        r.groups = r.groups.filter((x: string) => !groups.includes(x));
        if (r.cidrs.length + r.groups.length < before) found = true;
      }
      g.ingress = g.ingress.filter((r) => r.cidrs.length + r.groups.length > 0);
      if (!found) throw new Ec2Error("InvalidPermission.NotFound", "The specified rule does not exist in this security group.");
    }
    return { return: "true" };
  }

  opDescribeSecurityGroups(p: Record<string, any>) {
    const ids = list<string>(p.GroupId);
    const groups = [...this.securityGroups.values()].filter(
      (g) => (!ids.length || ids.includes(g.id)) && matches(filtersOf(p), g.tags, { "group-name": g.name, "vpc-id": g.vpcId, "group-id": g.id }),
    );
    return {
      securityGroupInfo: groups.map((g) => ({
        ownerId: OWNER,
        groupId: g.id,
        groupName: g.name,
        groupDescription: g.description,
        vpcId: g.vpcId,
        ipPermissions: g.ingress.map((r) => ({
          ipProtocol: r.ipProtocol,
          fromPort: r.fromPort,
          toPort: r.toPort,
          groups: r.groups.map((id: string) => ({ userId: OWNER, groupId: id })),
          ipRanges: r.cidrs.map((c: string) => ({ cidrIp: c })),
        })),
        ipPermissionsEgress: [{ ipProtocol: "-1", ipRanges: [{ cidrIp: "0.0.0.0/0" }] }],
        tagSet: tagSet(g.tags),
      })),
    };
  }

  opDeleteSecurityGroup(p: Record<string, any>) {
    const g = this.sg(String(p.GroupId));
    const user = [...this.instances.values()].find((i) => i.state !== "terminated" && i.sgIds.includes(g.id));
    if (user) throw new Ec2Error("DependencyViolation", `resource ${g.id} has a dependent object`);
    this.securityGroups.delete(g.id);
    return { return: "true" };
  }

  // ------------------------------------------------------------------ key pairs

  opImportKeyPair(p: Record<string, any>) {
    const name = String(p.KeyName);
    if ([...this.keyPairs.values()].some((k) => k.name === name)) {
      throw new Ec2Error("InvalidKeyPair.Duplicate", `The keypair '${name}' already exists.`);
    }
    const material = Buffer.from(String(p.PublicKeyMaterial ?? ""), "base64").toString("utf8").trim();
    if (!/^(ssh-(ed25519|rsa)) [A-Za-z0-9+/=]+/.test(material)) throw new Ec2Error("InvalidKey.Format", "Key is not in valid OpenSSH public key format");
    const id = rid("key-");
    const fingerprint = "SHA256:" + Buffer.from(material.split(" ")[1]!, "base64").toString("base64").slice(0, 43);
    this.keyPairs.set(id, { id, name, publicKey: material, fingerprint, tags: tagsFromSpecs(p, "key-pair") });
    return { keyName: name, keyFingerprint: fingerprint, keyPairId: id, tagSet: tagSet(this.keyPairs.get(id)!.tags) };
  }

  opDescribeKeyPairs(p: Record<string, any>) {
    const names = list<string>(p.KeyName);
    const keys = [...this.keyPairs.values()].filter((k) => (!names.length || names.includes(k.name)) && matches(filtersOf(p), k.tags, { "key-name": k.name, "key-pair-id": k.id }));
    for (const n of names) if (!keys.some((k) => k.name === n)) throw new Ec2Error("InvalidKeyPair.NotFound", `The key pair '${n}' does not exist`);
    return { keySet: keys.map((k) => ({ keyPairId: k.id, keyName: k.name, keyFingerprint: k.fingerprint, keyType: k.publicKey.startsWith("ssh-rsa") ? "rsa" : "ed25519", tagSet: tagSet(k.tags) })) };
  }

  opDeleteKeyPair(p: Record<string, any>) {
    for (const k of [...this.keyPairs.values()]) if (k.id === p.KeyPairId || k.name === p.KeyName) this.keyPairs.delete(k.id);
    return { return: "true" };
  }

  // ------------------------------------------------------------------ instances

  private byClientToken = new Map<string, Record<string, unknown>>();

  opRunInstances(p: Record<string, any>) {
    // EC2 answers a repeated ClientToken with the original reservation (idempotent retries)
    const token = p.ClientToken ? String(p.ClientToken) : undefined;
    const seen = token ? this.byClientToken.get(token) : undefined;
    if (seen) return seen;
    const result = this.runInstances(p);
    if (token) this.byClientToken.set(token, result);
    return result;
  }

  private runInstances(p: Record<string, any>) {
    const count = Number(p.MaxCount ?? 1);
    const subnet = this.subnets.find((s) => s.id === p.SubnetId) ?? this.subnets[0]!;
    if (p.ImageId !== this.imageId) throw new Ec2Error("InvalidAMIID.NotFound", `The image id '[${p.ImageId}]' does not exist`);
    const key = p.KeyName ? [...this.keyPairs.values()].find((k) => k.name === p.KeyName) : undefined;
    if (p.KeyName && !key) throw new Ec2Error("InvalidKeyPair.NotFound", `The key pair '${p.KeyName}' does not exist`);
    const sgIds = list<string>(p.SecurityGroupId);
    for (const id of sgIds) this.sg(id);
    const cf = this.takeCreateFault();
    if (cf === "deny") {
      throw new Ec2Error("UnauthorizedOperation", "You are not authorized to perform this operation. User: arn:aws:iam::123456789012:user/tray is not authorized to perform: ec2:RunInstances", 403);
    }
    if (cf === "quota") {
      throw new Ec2Error("VcpuLimitExceeded", "You have requested more vCPU capacity than your current vCPU limit of 32 allows for the instance bucket that the specified instance type belongs to.");
    }
    if (this.zoneHasNoCapacity(subnet.zone)) {
      throw new Ec2Error(
        "InsufficientInstanceCapacity",
        `We currently do not have sufficient ${p.InstanceType} capacity in the Availability Zone you requested (${subnet.zone}). Our system will be working on provisioning additional capacity.`,
        500,
      );
    }
    const bdm = list(p.BlockDeviceMapping)[0] ?? {};
    const out: Ec2Instance[] = [];
    for (let n = 0; n < count; n++) {
      const tags = tagsFromSpecs(p, "instance");
      const inst: Ec2Instance = {
        id: rid("i-"),
        imageId: String(p.ImageId),
        type: String(p.InstanceType ?? "m1.small"),
        keyName: key?.name,
        subnetId: subnet.id,
        zone: subnet.zone,
        sgIds,
        state: "pending",
        tags,
        launchTime: new Date().toISOString(),
        volumeId: rid("vol-"),
        deviceName: String(bdm.DeviceName ?? "/dev/sda1"),
        deleteVolume: String(bdm.Ebs?.DeleteOnTermination ?? "true") !== "false",
        eniId: rid("eni-"),
        spot: p.InstanceMarketOptions?.MarketType === "spot",
        unreachable: this.takeUnreachable(),
      };
      this.instances.set(inst.id, inst);
      this.volumes.set(inst.volumeId, { id: inst.volumeId, zone: subnet.zone, size: Number(bdm.Ebs?.VolumeSize ?? 8), state: "in-use", tags: tagsFromSpecs(p, "volume"), instanceId: inst.id });
      this.nics.set(inst.eniId, { id: inst.eniId, subnetId: subnet.id, state: "in-use", tags: tagsFromSpecs(p, "network-interface"), instanceId: inst.id });
      this.boot({ user: "ubuntu", authorizedKeys: key ? [key.publicKey] : [], hostname: `ip-${inst.id}`, reachable: !inst.unreachable }, (host) => {
        if (inst.state !== "pending") return void this.destroyHost(host);
        inst.host = host;
        inst.state = host ? "running" : "terminated";
        const nic = this.nics.get(inst.eniId);
        if (nic && host) nic.privateIp = host.privateIp;
      });
      out.push(inst);
    }
    return { reservationId: rid("r-"), ownerId: OWNER, groupSet: [], instancesSet: out.map((i) => this.instanceXml(i)) };
  }

  private instanceXml(i: Ec2Instance) {
    const live = i.state !== "terminated" && i.state !== "shutting-down" && i.host;
    return {
      instanceId: i.id,
      imageId: i.imageId,
      instanceState: { code: STATE_CODE[i.state], name: i.state },
      privateDnsName: live ? `ip-${i.host!.privateIp.replace(/\./g, "-")}.ec2.internal` : "",
      privateIpAddress: live ? i.host!.privateIp : undefined,
      ipAddress: live && i.state === "running" ? i.host!.publicIp : undefined,
      keyName: i.keyName,
      instanceType: i.type,
      launchTime: i.launchTime,
      placement: { availabilityZone: i.zone, tenancy: "default" },
      subnetId: i.subnetId,
      vpcId: this.vpcId,
      instanceLifecycle: i.spot ? "spot" : undefined,
      groupSet: i.sgIds.map((id) => ({ groupId: id, groupName: this.securityGroups.get(id)?.name ?? "" })),
      rootDeviceType: "ebs",
      rootDeviceName: i.deviceName,
      blockDeviceMapping: i.state === "terminated" ? [] : [{ deviceName: i.deviceName, ebs: { volumeId: i.volumeId, status: "attached", deleteOnTermination: String(i.deleteVolume) } }],
      tagSet: tagSet(i.tags),
    };
  }

  private instancesById(ids: string[]): Ec2Instance[] {
    return ids.map((id) => {
      const i = this.instances.get(id);
      if (!i) throw new Ec2Error("InvalidInstanceID.NotFound", `The instance ID '${id}' does not exist`);
      return i;
    });
  }

  opDescribeInstances(p: Record<string, any>) {
    const ids = list<string>(p.InstanceId);
    const pool = ids.length ? this.instancesById(ids) : [...this.instances.values()];
    const found = pool.filter((i) =>
      matches(filtersOf(p), i.tags, {
        "instance-state-name": i.state,
        "instance-id": i.id,
        "availability-zone": i.zone,
        "instance-type": i.type,
      }),
    );
    return { reservationSet: found.map((i) => ({ reservationId: "r-" + i.id.slice(2), ownerId: OWNER, groupSet: [], instancesSet: [this.instanceXml(i)] })) };
  }

  private transition(i: Ec2Instance, to: "terminated" | "stopped"): void {
    const prev = i.state;
    i.state = to === "terminated" ? "shutting-down" : "stopping";
    const host = i.host;
    if (to === "terminated") i.host = undefined;
    const p = (async () => {
      if (host) await this.destroyHost(host);
      await new Promise((r) => setTimeout(r, 200));
      if (to === "terminated") {
        i.state = "terminated";
        if (i.deleteVolume) this.volumes.delete(i.volumeId);
        else {
          const v = this.volumes.get(i.volumeId);
          if (v) (v.state = "available"), (v.instanceId = undefined);
        }
        this.nics.delete(i.eniId);
      } else {
        i.host = undefined;
        i.state = "stopped";
      }
    })();
    this.track(p);
    void prev;
  }

  opTerminateInstances(p: Record<string, any>) {
    const insts = this.instancesById(list<string>(p.InstanceId));
    const out = insts.map((i) => {
      const prev = i.state;
      if (i.state !== "terminated" && i.state !== "shutting-down") this.transition(i, "terminated");
      return { instanceId: i.id, previousState: { code: STATE_CODE[prev], name: prev }, currentState: { code: STATE_CODE[i.state], name: i.state } };
    });
    return { instancesSet: out };
  }

  opStopInstances(p: Record<string, any>) {
    const insts = this.instancesById(list<string>(p.InstanceId));
    const out = insts.map((i) => {
      const prev = i.state;
      if (i.state === "running" || i.state === "pending") this.transition(i, "stopped");
      return { instanceId: i.id, previousState: { code: STATE_CODE[prev], name: prev }, currentState: { code: STATE_CODE[i.state], name: i.state } };
    });
    return { instancesSet: out };
  }

  // ------------------------------------------------------------------ volumes + NICs

  opDescribeVolumes(p: Record<string, any>) {
    const vols = [...this.volumes.values()].filter((v) => matches(filtersOf(p), v.tags, { status: v.state, "volume-id": v.id }));
    return {
      volumeSet: vols.map((v) => ({
        volumeId: v.id,
        size: v.size,
        availabilityZone: v.zone,
        status: v.state,
        createTime: new Date().toISOString(),
        volumeType: "gp3",
        attachmentSet: v.instanceId ? [{ volumeId: v.id, instanceId: v.instanceId, status: "attached" }] : [],
        tagSet: tagSet(v.tags),
      })),
    };
  }

  opDeleteVolume(p: Record<string, any>) {
    const v = this.volumes.get(String(p.VolumeId));
    if (!v) throw new Ec2Error("InvalidVolume.NotFound", `The volume '${p.VolumeId}' does not exist.`);
    if (v.state === "in-use") throw new Ec2Error("VolumeInUse", `Volume ${v.id} is currently attached to ${v.instanceId}`);
    this.volumes.delete(v.id);
    return { return: "true" };
  }

  opDescribeNetworkInterfaces(p: Record<string, any>) {
    const nics = [...this.nics.values()].filter((n) => matches(filtersOf(p), n.tags, { status: n.state, "network-interface-id": n.id }));
    return {
      networkInterfaceSet: nics.map((n) => ({
        networkInterfaceId: n.id,
        subnetId: n.subnetId,
        vpcId: this.vpcId,
        status: n.state,
        privateIpAddress: n.privateIp,
        attachment: n.instanceId ? { instanceId: n.instanceId, status: "attached" } : undefined,
        tagSet: tagSet(n.tags),
      })),
    };
  }

  opDeleteNetworkInterface(p: Record<string, any>) {
    const n = this.nics.get(String(p.NetworkInterfaceId));
    if (!n) throw new Ec2Error("InvalidNetworkInterfaceID.NotFound", `The networkInterface ID '${p.NetworkInterfaceId}' does not exist`);
    if (n.state === "in-use") throw new Ec2Error("InvalidNetworkInterface.InUse", `Interface: [${n.id}] in use.`);
    this.nics.delete(n.id);
    return { return: "true" };
  }

  inventory(cluster: string): Inventory {
    const inv = emptyInventory();
    const mine = (t: Tags) => t["tray-cluster-name"] === cluster;
    for (const i of this.instances.values()) if (i.state !== "terminated" && mine(i.tags)) inv.instances.push(i.id);
    for (const g of this.securityGroups.values()) if (mine(g.tags)) inv.securityGroups.push(g.id);
    for (const k of this.keyPairs.values()) if (mine(k.tags)) inv.keyPairs.push(k.name);
    for (const v of this.volumes.values()) if (mine(v.tags)) inv.disks.push(v.id);
    for (const n of this.nics.values()) if (mine(n.tags)) inv.nics.push(n.id);
    for (const i of this.instances.values()) if (i.state !== "terminated" && mine(i.tags) && i.host) inv.publicIps.push(i.host.publicIp);
    return inv;
  }

  /** Instances by id with their real host (for tests that look inside). */
  instance(id: string): Ec2Instance | undefined {
    return this.instances.get(id);
  }
}
