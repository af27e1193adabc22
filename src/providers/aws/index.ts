// AWS provider: EC2 through @aws-sdk/client-ec2 (loaded with import() on first use).
//
// Resources tray creates, all tagged with the cluster name (and node type/kind/name where
// they belong to a node): one security group `tray-<cluster>` in the VPC of the chosen
// subnets (SSH from the caller's CIDR, all traffic from members of the group itself, nothing
// else), one key pair `tray-<cluster>-<fingerprint>` imported from the user's PUBLIC key,
// and per node an instance with its root volume and network interface (both deleted with the
// instance; cleanup() removes any left over).
//
// Endpoint: the SDK's own override (AWS_ENDPOINT_URL_EC2 / AWS_ENDPOINT_URL). Credentials:
// the SDK's default chain. Retries: the SDK's own retry is turned off (maxAttempts 1) because
// it retries every 5xx, and EC2 answers InsufficientInstanceCapacity with a 500: retrying a
// zone without capacity only delays the fall-over to the next zone. tray retries through
// retry.ts instead: throttling codes, other 5xx and network errors with backoff, and EC2's
// eventual consistency right after a create (InvalidInstanceID.NotFound and friends).
import crypto from "node:crypto";
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
  keyFingerprint,
  nodeTags,
  pollUntil,
  readPublicKey,
  requireProviderString,
  sshUser,
  useInternalIps,
  zoneList,
  type ProviderClusterConfig,
} from "../index.js";
import { cloudUserError, oneLine, retryLog, sleep, withRetry, type CloudErrorInfo } from "../retry.js";

type Ec2 = typeof import("@aws-sdk/client-ec2");

const UBUNTU_OWNER = "099720108477";
const UBUNTU_NAME = "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*";

const CAPACITY = new Set([
  "InsufficientInstanceCapacity",
  "InsufficientCapacity",
  "InsufficientHostCapacity",
  "InsufficientReservedInstanceCapacity",
  "InsufficientAddressCapacity",
  "Unsupported",
  "SpotMaxPriceTooLow",
]);
const QUOTA = new Set([
  "InstanceLimitExceeded",
  "VcpuLimitExceeded",
  "MaxSpotInstanceCountExceeded",
  "VolumeLimitExceeded",
  "AddressLimitExceeded",
  "SecurityGroupLimitExceeded",
  "RulesPerSecurityGroupLimitExceeded",
  "KeyPairLimitExceeded",
  "ResourceLimitExceeded",
]);
const PERMISSION = new Set(["UnauthorizedOperation", "OptInRequired", "Blocked", "AccessDenied", "AccessDeniedException"]);
const CREDENTIALS = new Set(["AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "UnrecognizedClientException"]);
const THROTTLING = new Set([
  "RequestLimitExceeded",
  "Throttling",
  "ThrottlingException",
  "RequestThrottled",
  "RequestThrottledException",
  "TooManyRequestsException",
  "SlowDown",
  "PriorRequestNotComplete",
  "EC2ThrottledException",
]);
const TRANSIENT_CODES = new Set(["InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable", "RequestTimeout", "RequestTimeoutException"]);
const NETWORK = new Set(["ECONNRESET", "ECONNREFUSED", "ETIMEDOUT", "EPIPE", "EAI_AGAIN", "TimeoutError", "RequestTimeout"]);
/** A resource still held by an instance that is shutting down. */
const IN_USE = new Set(["DependencyViolation", "IncorrectState", "InvalidNetworkInterface.InUse", "VolumeInUse"]);
/** Eventual consistency: a resource just created is not yet visible to other calls. */
const NOT_YET_VISIBLE = new Set(["InvalidInstanceID.NotFound", "InvalidGroup.NotFound", "InvalidKeyPair.NotFound", "InvalidNetworkInterfaceID.NotFound"]);

/** Classify an error thrown by @aws-sdk/client-ec2 (pure: unit-tested). */
export function classifyAwsError(err: unknown): CloudErrorInfo {
  const e = err as any;
  const code: string = e?.Code ?? e?.code ?? e?.name ?? "Error";
  const message: string = e?.message ?? String(err);
  const status: number | undefined = e?.$metadata?.httpStatusCode;
  let cls: CloudErrorInfo["cls"] = "other";
  // capacity before 5xx: EC2 answers InsufficientInstanceCapacity with HTTP 500, yet retrying
  // the same zone is pointless (the next zone is tried instead)
  if (e?.name === "CredentialsProviderError") cls = "credentials";
  else if (CAPACITY.has(code)) cls = "capacity";
  else if (QUOTA.has(code)) cls = "quota";
  else if (PERMISSION.has(code)) cls = "permission";
  else if (CREDENTIALS.has(code)) cls = "credentials";
  else if (THROTTLING.has(code) || TRANSIENT_CODES.has(code) || (status !== undefined && status >= 500)) cls = "transient";
  else if (!e?.$metadata && NETWORK.has(e?.code ?? e?.name)) cls = "transient";
  else if (code.endsWith(".NotFound")) cls = "not-found";
  else if (code.endsWith(".Duplicate") || code === "DependencyViolation" || code === "IncorrectState") cls = "conflict";
  return { cls, code, message, ...(status !== undefined ? { status } : {}) };
}

const STATE: Record<string, InstanceState> = {
  pending: "pending",
  running: "running",
  stopping: "stopping",
  stopped: "stopped",
  "shutting-down": "stopping", // on its way to terminated
  terminated: "terminated",
};

function tagsOf(list: { Key?: string; Value?: string }[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const t of list ?? []) if (t.Key) out[t.Key] = t.Value ?? "";
  return out;
}

function tagList(tags: Record<string, string>): { Key: string; Value: string }[] {
  return Object.entries(tags).map(([Key, Value]) => ({ Key, Value }));
}

export class AwsProvider implements Provider {
  readonly name = "aws";
  readonly capabilities = { stop: true, creates: true, ssh: true };
  readonly region: string;
  readonly cluster: string;
  private sdk?: Ec2;
  private client?: InstanceType<Ec2["EC2Client"]>;
  private sgId?: string;
  private keyName?: string;
  private subnetCache = new Map<string, { zone: string; subnetId: string; vpcId: string }[]>();

  constructor(private config: ProviderClusterConfig) {
    this.cluster = config.cluster_name;
    this.region = requireProviderString(config, "region", "us-east-1");
  }

  private async ec2(): Promise<{ sdk: Ec2; client: InstanceType<Ec2["EC2Client"]> }> {
    if (!this.sdk) {
      // tray supports Node 20; the SDK's notice about its own future versions is not for tray's users
      process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
      this.sdk = await import("@aws-sdk/client-ec2");
      this.client = new this.sdk.EC2Client({ region: this.region, maxAttempts: 1 });
    }
    return { sdk: this.sdk, client: this.client! };
  }

  /** Send one command; errors that are the user's to fix become one-sentence UserErrors. */
  private async send<T>(action: string, make: (sdk: Ec2) => any, opts: { retryNotVisible?: boolean; raw?: boolean } = {}): Promise<T> {
    const { sdk, client } = await this.ec2();
    try {
      return await withRetry(() => client.send(make(sdk)) as Promise<T>, {
        attempts: 8,
        baseMs: 500,
        isTransient: (e) => {
          const info = classifyAwsError(e);
          return info.cls === "transient" || (opts.retryNotVisible === true && NOT_YET_VISIBLE.has(info.code));
        },
        onRetry: (e, attempt, ms) => retryLog(`AWS ${action}: ${classifyAwsError(e).code}, retry ${attempt} in ${ms} ms`),
      });
    } catch (e) {
      if (opts.raw) throw e;
      throw this.userError(action, e);
    }
  }

  private userError(action: string, e: unknown): unknown {
    const info = classifyAwsError(e);
    if (info.cls === "credentials" && (e as any)?.name === "CredentialsProviderError") {
      return new UserError(`No AWS credentials found for region ${this.region} (${oneLine(info.message, 160)}).`, {
        cause: e,
        hint: "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run `aws configure`",
      });
    }
    if (info.cls === "other" && !(e as any)?.$metadata) return e; // not an API error: a bug or a network failure
    return cloudUserError("AWS", action, info, e);
  }

  // ------------------------------------------------------------------ network + keys

  /**
   * Subnets to try, in order: node_config.SubnetIds when given, else the default subnet of each
   * zone in provider.availability_zone (all zones of the region, by name, when none is given).
   */
  private async resolveSubnets(nodeConfig: Record<string, unknown> = {}): Promise<{ zone: string; subnetId: string; vpcId: string }[]> {
    const ids = zoneList(nodeConfig.SubnetIds);
    const cacheKey = ids.join(",");
    const cached = this.subnetCache.get(cacheKey);
    if (cached) return cached;
    const wanted = zoneList(this.config.provider.availability_zones ?? this.config.provider.availability_zone);
    let subnets: any[];
    if (ids.length) {
      const r: any = await this.send("DescribeSubnets", (s) => new s.DescribeSubnetsCommand({ SubnetIds: ids }));
      subnets = ids.map((id) => (r.Subnets ?? []).find((x: any) => x.SubnetId === id)).filter(Boolean);
    } else {
      const vpcs: any = await this.send("DescribeVpcs", (s) => new s.DescribeVpcsCommand({ Filters: [{ Name: "isDefault", Values: ["true"] }] }));
      const vpc = vpcs.Vpcs?.[0]?.VpcId;
      if (!vpc) {
        throw new UserError(`AWS region ${this.region} has no default VPC; list the subnets to use in node_config.SubnetIds.`);
      }
      const r: any = await this.send("DescribeSubnets", (s) =>
        new s.DescribeSubnetsCommand({
          Filters: [
            { Name: "vpc-id", Values: [vpc] },
            { Name: "default-for-az", Values: ["true"] },
          ],
        }),
      );
      subnets = [...(r.Subnets ?? [])].sort((a: any, b: any) => String(a.AvailabilityZone).localeCompare(String(b.AvailabilityZone)));
    }
    let list = subnets.map((s) => ({ zone: String(s.AvailabilityZone), subnetId: String(s.SubnetId), vpcId: String(s.VpcId) }));
    if (wanted.length && !ids.length) {
      const byZone = new Map(list.map((s) => [s.zone, s]));
      const missing = wanted.filter((z) => !byZone.has(z));
      if (missing.length) {
        throw new UserError(`provider.availability_zone names ${missing.join(", ")}, which has no default subnet in ${this.region}; list subnets in node_config.SubnetIds.`);
      }
      list = wanted.map((z) => byZone.get(z)!);
    }
    if (!list.length) throw new UserError(`No subnet found in AWS region ${this.region}; list subnets in node_config.SubnetIds.`);
    if (new Set(list.map((s) => s.vpcId)).size > 1) throw new UserError(`node_config.SubnetIds must all be in one VPC.`);
    this.subnetCache.set(cacheKey, list);
    return list;
  }

  private async findSecurityGroup(): Promise<any | undefined> {
    const r: any = await this.send("DescribeSecurityGroups", (s) =>
      new s.DescribeSecurityGroupsCommand({ Filters: [{ Name: `tag:${TAG_CLUSTER}`, Values: [this.cluster] }] }),
    );
    return r.SecurityGroups?.[0];
  }

  async bootstrap(): Promise<void> {
    const types = Object.values((this.config.available_node_types ?? {}) as Record<string, { node_config?: Record<string, unknown> }>);
    const withSubnets = types.map((t) => t?.node_config ?? {}).find((nc) => zoneList(nc.SubnetIds).length);
    const subnets = await this.resolveSubnets(withSubnets);
    const vpcId = subnets[0]!.vpcId;
    const extra = extraTags(this.config);
    // security group: the user's own (provider.security_group: name or id; tray neither changes
    // nor deletes it), else one tray creates and owns
    const own = this.config.provider.security_group;
    if (typeof own === "string" && own) {
      const r: any = await this.send("DescribeSecurityGroups", (s) =>
        new s.DescribeSecurityGroupsCommand({ Filters: [{ Name: own.startsWith("sg-") ? "group-id" : "group-name", Values: [own] }, { Name: "vpc-id", Values: [vpcId] }] }),
      );
      if (!r.SecurityGroups?.length) throw new UserError(`provider.security_group ${own} was not found in ${vpcId} (${this.region}).`);
      this.sgId = r.SecurityGroups[0].GroupId;
    } else {
      await this.ensureSecurityGroup(vpcId, await callerCidr(this.config), extra);
    }
    await this.ensureKeyPair(extra);
  }

  private async ensureSecurityGroup(vpcId: string, cidr: string, extra: Record<string, string>): Promise<void> {
    let sg = await this.findSecurityGroup();
    if (!sg) {
      try {
        const r: any = await this.send(
          "CreateSecurityGroup",
          (s) =>
            new s.CreateSecurityGroupCommand({
              GroupName: `tray-${this.cluster}`,
              Description: `tray cluster ${this.cluster}: SSH from ${cidr}, all traffic within the cluster`,
              VpcId: vpcId,
              TagSpecifications: [{ ResourceType: "security-group", Tags: tagList(clusterTags(this.cluster, extra)) }],
            }),
          { raw: true },
        );
        sg = { GroupId: r.GroupId, IpPermissions: [] };
      } catch (e) {
        if (classifyAwsError(e).code !== "InvalidGroup.Duplicate") throw this.userError("CreateSecurityGroup", e);
        const r: any = await this.send("DescribeSecurityGroups", (s) =>
          new s.DescribeSecurityGroupsCommand({
            Filters: [
              { Name: "group-name", Values: [`tray-${this.cluster}`] },
              { Name: "vpc-id", Values: [vpcId] },
            ],
          }),
        );
        sg = r.SecurityGroups?.[0];
        if (!sg) throw this.userError("CreateSecurityGroup", e);
        if (tagsOf(sg.Tags)[TAG_CLUSTER] !== this.cluster) {
          throw new UserError(`A security group named tray-${this.cluster} exists in ${vpcId} but was not made by tray for this cluster; remove it or rename the cluster.`);
        }
      }
    }
    this.sgId = sg.GroupId;
    const perms: any[] = sg.IpPermissions ?? [];
    const hasSsh = perms.some((p) => p.IpProtocol === "tcp" && p.FromPort === 22 && p.ToPort === 22 && (p.IpRanges ?? []).some((r: any) => r.CidrIp === cidr));
    const hasSelf = perms.some((p) => p.IpProtocol === "-1" && (p.UserIdGroupPairs ?? []).some((g: any) => g.GroupId === this.sgId));
    // SSH only from the caller: a rule for an address the user no longer runs from is revoked
    const stale = perms
      .filter((p) => p.IpProtocol === "tcp" && p.FromPort === 22 && p.ToPort === 22)
      .flatMap((p) => (p.IpRanges ?? []).filter((r: any) => r.CidrIp !== cidr).map((r: any) => r.CidrIp as string));
    if (stale.length) {
      await this.send("RevokeSecurityGroupIngress", (s) =>
        new s.RevokeSecurityGroupIngressCommand({ GroupId: this.sgId, IpPermissions: [{ IpProtocol: "tcp", FromPort: 22, ToPort: 22, IpRanges: stale.map((CidrIp) => ({ CidrIp })) }] }),
      );
    }
    const want: any[] = [];
    if (!hasSsh) want.push({ IpProtocol: "tcp", FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: cidr, Description: "SSH from the tray CLI" }] });
    if (!hasSelf) want.push({ IpProtocol: "-1", UserIdGroupPairs: [{ GroupId: this.sgId, Description: "all traffic within the cluster" }] });
    for (const p of want) {
      try {
        await this.send("AuthorizeSecurityGroupIngress", (s) => new s.AuthorizeSecurityGroupIngressCommand({ GroupId: this.sgId, IpPermissions: [p] }), { raw: true });
      } catch (e) {
        if (classifyAwsError(e).code !== "InvalidPermission.Duplicate") throw this.userError("AuthorizeSecurityGroupIngress", e);
      }
    }
  }

  /** Key pair imported from the user's PUBLIC key (the private key never leaves this machine). */
  private async ensureKeyPair(extra: Record<string, string>): Promise<void> {
    const pub = await readPublicKey(this.config);
    const keyName = `tray-${this.cluster}-${keyFingerprint(pub)}`;
    const existing: any = await this.send("DescribeKeyPairs", (s) =>
      new s.DescribeKeyPairsCommand({ Filters: [{ Name: "key-name", Values: [keyName] }] }),
    );
    if (!existing.KeyPairs?.length) {
      try {
        await this.send(
          "ImportKeyPair",
          (s) =>
            new s.ImportKeyPairCommand({
              KeyName: keyName,
              PublicKeyMaterial: Buffer.from(pub),
              TagSpecifications: [{ ResourceType: "key-pair", Tags: tagList(clusterTags(this.cluster, extra)) }],
            }),
          { raw: true },
        );
      } catch (e) {
        if (classifyAwsError(e).code !== "InvalidKeyPair.Duplicate") throw this.userError("ImportKeyPair", e);
      }
    }
    this.keyName = keyName;
  }

  // ------------------------------------------------------------------ instances

  private async defaultImage(): Promise<{ imageId: string; rootDevice: string }> {
    const r: any = await this.send("DescribeImages", (s) =>
      new s.DescribeImagesCommand({
        Owners: [UBUNTU_OWNER],
        Filters: [
          { Name: "name", Values: [UBUNTU_NAME] },
          { Name: "state", Values: ["available"] },
        ],
      }),
    );
    const imgs = [...(r.Images ?? [])].sort((a: any, b: any) => String(b.CreationDate).localeCompare(String(a.CreationDate)));
    if (!imgs.length) throw new UserError(`No Ubuntu 22.04 image found in ${this.region}; set node_config.ImageId.`);
    return { imageId: imgs[0].ImageId, rootDevice: imgs[0].RootDeviceName ?? "/dev/sda1" };
  }

  private async rootDevice(imageId: string): Promise<string> {
    const r: any = await this.send("DescribeImages", (s) => new s.DescribeImagesCommand({ ImageIds: [imageId] }));
    const img = r.Images?.[0];
    if (!img) throw new UserError(`node_config.ImageId ${imageId} was not found in ${this.region}.`);
    return img.RootDeviceName ?? "/dev/sda1";
  }

  async runInstances(requests: RunRequest[]): Promise<InstanceRecord[]> {
    if (!this.sgId || !this.keyName) await this.bootstrap();
    const out: InstanceRecord[] = [];
    let defaultImg: { imageId: string; rootDevice: string } | undefined;
    for (const req of requests) {
      const nc = req.nodeConfig ?? {};
      let imageId = nc.ImageId as string | undefined;
      let rootDevice: string;
      if (!imageId) {
        defaultImg ??= await this.defaultImage();
        imageId = defaultImg.imageId;
        rootDevice = defaultImg.rootDevice;
      } else {
        rootDevice = await this.rootDevice(imageId);
      }
      const blockDevices =
        (nc.BlockDeviceMappings as any[]) ??
        [
          {
            DeviceName: rootDevice,
            Ebs: { VolumeSize: Number(nc.DiskSizeGb ?? nc.disk_size_gb ?? 100), VolumeType: "gp3", DeleteOnTermination: true },
          },
        ];
      const subnets = await this.resolveSubnets(nc);
      const spot = nc.InstanceMarketOptions ?? (nc.spot === true ? { MarketType: "spot" } : undefined);
      const launches = req.names.map(async (name) => {
        const tags = nodeTags(req.clusterName, req.nodeType, req.kind, name, { ...extraTags(this.config), ...req.tags, Name: name });
        let lastErr: unknown;
        for (const sn of subnets) {
          // ClientToken: a RunInstances retried after a 5xx whose request did succeed returns the
          // same instance instead of launching a second one
          const clientToken = crypto.randomUUID();
          try {
            const r: any = await this.send(
              "RunInstances",
              (s) =>
                new s.RunInstancesCommand({
                  ImageId: imageId,
                  InstanceType: String(nc.InstanceType ?? "m5.large") as any,
                  MinCount: 1,
                  MaxCount: 1,
                  ClientToken: clientToken,
                  KeyName: this.keyName,
                  SubnetId: sn.subnetId,
                  SecurityGroupIds: (nc.SecurityGroupIds as string[] | undefined) ?? [this.sgId!],
                  BlockDeviceMappings: blockDevices,
                  ...(spot ? { InstanceMarketOptions: spot } : {}),
                  ...(nc.IamInstanceProfile ? { IamInstanceProfile: nc.IamInstanceProfile } : {}),
                  ...(nc.UserData ? { UserData: Buffer.from(String(nc.UserData)).toString("base64") } : {}),
                  TagSpecifications: [
                    { ResourceType: "instance", Tags: tagList(tags) },
                    { ResourceType: "volume", Tags: tagList(tags) },
                    { ResourceType: "network-interface", Tags: tagList(tags) },
                  ],
                }),
              { raw: true },
            );
            return this.record(r.Instances[0]);
          } catch (e) {
            const info = classifyAwsError(e);
            lastErr = e;
            if (info.cls === "capacity") continue; // next zone
            throw this.userError(`RunInstances (${name} in ${sn.zone})`, e);
          }
        }
        throw this.userError(`RunInstances (${name}, zones tried: ${subnets.map((s) => s.zone).join(", ")})`, lastErr);
      });
      const settled = await Promise.allSettled(launches);
      for (const s of settled) if (s.status === "fulfilled") out.push(s.value);
      const failed = settled.find((s) => s.status === "rejected") as PromiseRejectedResult | undefined;
      if (failed) {
        (failed.reason as any).created = out; // so the caller can clean up what was made
        throw failed.reason;
      }
    }
    return out;
  }

  private record(i: any): InstanceRecord {
    const tags = tagsOf(i.Tags);
    const state = STATE[i.State?.Name ?? ""] ?? "pending";
    const privateIp: string | undefined = i.PrivateIpAddress || undefined;
    const publicIp: string | undefined = i.PublicIpAddress || undefined;
    const host = useInternalIps(this.config) ? privateIp : publicIp ?? privateIp;
    const rec: InstanceRecord = {
      id: i.InstanceId,
      name: tags[TAG_NODE_NAME] ?? i.InstanceId,
      kind: tags[TAG_NODE_KIND] === "head" ? "head" : "worker",
      nodeType: tags[TAG_NODE_TYPE] ?? "",
      state,
      tags,
    };
    if (privateIp) rec.privateIp = privateIp;
    if (publicIp) rec.publicIp = publicIp;
    if (i.Placement?.AvailabilityZone) rec.zone = i.Placement.AvailabilityZone;
    if (host) rec.ssh = { host, port: 22, user: sshUser(this.config, "ubuntu") };
    return rec;
  }

  private async describe(filters: { Name: string; Values: string[] }[], ids?: string[]): Promise<InstanceRecord[]> {
    const out: InstanceRecord[] = [];
    let token: string | undefined;
    do {
      const r: any = await this.send(
        "DescribeInstances",
        (s) => new s.DescribeInstancesCommand({ ...(filters.length ? { Filters: filters } : {}), ...(ids ? { InstanceIds: ids } : {}), ...(token ? { NextToken: token } : {}) }),
        { retryNotVisible: true },
      );
      for (const res of r.Reservations ?? []) for (const i of res.Instances ?? []) out.push(this.record(i));
      token = r.NextToken;
    } while (token);
    return out;
  }

  async queryInstances(filter: QueryFilter): Promise<InstanceRecord[]> {
    const states = ["pending", "running", "stopping", "stopped", ...(filter.includeTerminated ? ["shutting-down", "terminated"] : [])];
    const filters = [
      { Name: `tag:${TAG_CLUSTER}`, Values: [filter.clusterName] },
      { Name: "instance-state-name", Values: states },
    ];
    if (filter.kind) filters.push({ Name: `tag:${TAG_NODE_KIND}`, Values: [filter.kind] });
    const recs = await this.describe(filters);
    return recs.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  }

  async waitInstances(ids: string[], state: InstanceState, timeoutMs = 600_000): Promise<InstanceRecord[]> {
    if (!ids.length) return [];
    let last: InstanceRecord[] = [];
    return pollUntil(
      async () => {
        last = await this.describe([], ids);
        for (const r of last) {
          if (state !== "terminated" && r.state === "terminated") {
            throw new UserError(`AWS instance ${r.name} (${r.id}) was terminated while tray waited for it to be ${state}.`);
          }
        }
        const ready = last.length === ids.length && last.every((r) => r.state === state && (state !== "running" || r.privateIp));
        return ready ? last : undefined;
      },
      timeoutMs,
      () => {
        const late = last.filter((r) => r.state !== state).map((r) => `${r.name} (${r.id}, ${r.state})`);
        return new UserError(`AWS instances did not become ${state} within ${Math.round(timeoutMs / 1000)} s: ${late.join(", ") || ids.join(", ")}.`);
      },
    );
  }

  async stopInstances(ids: string[]): Promise<void> {
    if (!ids.length) return;
    await this.send("StopInstances", (s) => new s.StopInstancesCommand({ InstanceIds: ids }));
  }

  async terminateInstances(ids: string[]): Promise<RemovedResource[]> {
    if (!ids.length) return [];
    const before = await this.describe([], ids).catch(() => [] as InstanceRecord[]);
    try {
      await this.send("TerminateInstances", (s) => new s.TerminateInstancesCommand({ InstanceIds: ids }), { raw: true });
    } catch (e) {
      if (classifyAwsError(e).code !== "InvalidInstanceID.NotFound") throw this.userError("TerminateInstances", e);
    }
    // wait for "terminated": the security group cannot be deleted while an instance uses it
    await this.waitInstances(ids, "terminated", 600_000).catch((e) => {
      if (!/not found/i.test(String(e?.message))) throw e;
    });
    const removed: RemovedResource[] = [];
    for (const id of ids) {
      const r = before.find((b) => b.id === id);
      removed.push({ kind: "instance", id: r ? `${id} (${r.name})` : id });
    }
    return removed;
  }

  async cleanup(): Promise<RemovedResource[]> {
    const removed: RemovedResource[] = [];
    const byTag = [{ Name: `tag:${TAG_CLUSTER}`, Values: [this.cluster] }];
    // leftovers of nodes: volumes and network interfaces not deleted with their instance
    const vols: any = await this.send("DescribeVolumes", (s) => new s.DescribeVolumesCommand({ Filters: byTag }));
    for (const v of vols.Volumes ?? []) {
      if (v.State === "deleting" || v.State === "deleted") continue; // "in-use" ones wait for their instance below
      await this.deleteRetryingDependency("DeleteVolume", (s) => new s.DeleteVolumeCommand({ VolumeId: v.VolumeId }));
      removed.push({ kind: "disk", id: v.VolumeId });
    }
    const nics: any = await this.send("DescribeNetworkInterfaces", (s) => new s.DescribeNetworkInterfacesCommand({ Filters: byTag }));
    for (const n of nics.NetworkInterfaces ?? []) {
      await this.deleteRetryingDependency("DeleteNetworkInterface", (s) => new s.DeleteNetworkInterfaceCommand({ NetworkInterfaceId: n.NetworkInterfaceId }));
      removed.push({ kind: "nic", id: n.NetworkInterfaceId });
    }
    const sgs: any = await this.send("DescribeSecurityGroups", (s) => new s.DescribeSecurityGroupsCommand({ Filters: byTag }));
    for (const g of sgs.SecurityGroups ?? []) {
      await this.deleteRetryingDependency("DeleteSecurityGroup", (s) => new s.DeleteSecurityGroupCommand({ GroupId: g.GroupId }));
      removed.push({ kind: "security-group", id: `${g.GroupId} (${g.GroupName})` });
    }
    const keys: any = await this.send("DescribeKeyPairs", (s) => new s.DescribeKeyPairsCommand({ Filters: byTag }));
    for (const k of keys.KeyPairs ?? []) {
      await this.send("DeleteKeyPair", (s) => new s.DeleteKeyPairCommand({ KeyPairId: k.KeyPairId, KeyName: k.KeyPairId ? undefined : k.KeyName }));
      removed.push({ kind: "key-pair", id: k.KeyName });
    }
    this.sgId = undefined;
    this.keyName = undefined;
    return removed;
  }

  /** Deletes fail with DependencyViolation while a terminating instance still holds the resource. */
  private async deleteRetryingDependency(action: string, make: (sdk: Ec2) => any): Promise<void> {
    const end = Date.now() + 180_000;
    for (let delay = 1000; ; delay = Math.min(10_000, delay * 2)) {
      try {
        await this.send(action, make, { raw: true });
        return;
      } catch (e) {
        const info = classifyAwsError(e);
        if (info.code.endsWith(".NotFound")) return;
        if (!IN_USE.has(info.code) || Date.now() > end) {
          throw this.userError(action, e);
        }
        await sleep(delay);
      }
    }
  }
}

export function createProvider(config: ProviderClusterConfig): Provider {
  return new AwsProvider(config);
}
