// Pure parts of the cloud providers: error classification, retry/backoff, tag and label
// mapping, state mapping, config helpers, lazy SDK loading.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { isUserError } from "../../src/errors.js";
import { classifyAwsError } from "../../src/providers/aws/index.js";
import { azureName, azureState, classifyAzureError } from "../../src/providers/azure/index.js";
import { classifyGcpError, gcpLabels, gcpLabelValue, gcpName } from "../../src/providers/gcp/index.js";
import { callerCidr, clusterTags, keyFingerprint, loadProvider, nodeTags, readPublicKey, zoneList } from "../../src/providers/index.js";
import { TAG_CLUSTER, TAG_NODE_KIND, TAG_NODE_NAME, TAG_NODE_TYPE } from "../../src/providers/interface.js";
import { backoffDelay, cloudUserError, withRetry } from "../../src/providers/retry.js";

describe("retry", () => {
  it("backoff is full jitter under a doubling, capped ceiling", () => {
    assert.equal(backoffDelay(1, 500, 20000, () => 0.999999), 499);
    assert.equal(backoffDelay(2, 500, 20000, () => 0.5), 500);
    assert.equal(backoffDelay(3, 500, 20000, () => 0.999999), 1999);
    assert.equal(backoffDelay(20, 500, 20000, () => 0.999999), 19999);
    assert.equal(backoffDelay(5, 500, 20000, () => 0), 0);
  });

  it("retries transient errors only, up to the attempt limit", async () => {
    const waits: number[] = [];
    let calls = 0;
    const v = await withRetry(
      async () => {
        if (++calls < 3) throw Object.assign(new Error("slow down"), { transient: true });
        return "ok";
      },
      { isTransient: (e: any) => e.transient, sleep: async (ms) => void waits.push(ms), random: () => 0.5 },
    );
    assert.equal(v, "ok");
    assert.equal(calls, 3);
    assert.deepEqual(waits, [250, 500]);

    calls = 0;
    await assert.rejects(
      withRetry(
        async () => {
          calls++;
          throw new Error("quota");
        },
        { isTransient: () => false, sleep: async () => {} },
      ),
      /quota/,
    );
    assert.equal(calls, 1, "a non-transient error is not retried");

    calls = 0;
    await assert.rejects(
      withRetry(
        async () => {
          calls++;
          throw new Error("throttled");
        },
        { attempts: 4, isTransient: () => true, sleep: async () => {} },
      ),
      /throttled/,
    );
    assert.equal(calls, 4, "gives up after `attempts`");
  });

  it("a cloud error for the user is one sentence with the cloud's code, and a hint", () => {
    const e = cloudUserError("AWS", "RunInstances", { cls: "quota", code: "VcpuLimitExceeded", message: "You have requested more vCPU capacity\n than your current limit." });
    assert.ok(isUserError(e));
    assert.match(e.message, /^AWS RunInstances failed: a quota of your account is exhausted \(VcpuLimitExceeded: You have requested more vCPU capacity than your current limit\.\)$/);
    assert.ok(e.hint);
  });
});

describe("AWS error classification", () => {
  const err = (name: string, status: number, extra: Record<string, unknown> = {}) => Object.assign(new Error(`${name} happened`), { name, $metadata: { httpStatusCode: status }, ...extra });
  it("capacity before 5xx: InsufficientInstanceCapacity comes with HTTP 500 but falls over to the next zone", () => {
    assert.equal(classifyAwsError(err("InsufficientInstanceCapacity", 500)).cls, "capacity");
    assert.equal(classifyAwsError(err("Unsupported", 400)).cls, "capacity");
  });
  it("throttling and 5xx are transient", () => {
    for (const c of ["RequestLimitExceeded", "Throttling", "InternalError"]) assert.equal(classifyAwsError(err(c, 503)).cls, "transient", c);
    assert.equal(classifyAwsError(err("SomethingNew", 502)).cls, "transient");
  });
  it("quota, permission, credentials, conflicts", () => {
    assert.deepEqual(
      ["VcpuLimitExceeded", "InstanceLimitExceeded", "UnauthorizedOperation", "AuthFailure", "InvalidKeyPair.Duplicate", "InvalidInstanceID.NotFound", "InvalidParameterValue"].map(
        (c) => classifyAwsError(err(c, 400)).cls,
      ),
      ["quota", "quota", "permission", "credentials", "conflict", "not-found", "other"],
    );
    assert.equal(classifyAwsError(Object.assign(new Error("Could not load credentials from any providers"), { name: "CredentialsProviderError" })).cls, "credentials");
  });
  it("keeps the cloud's code and message", () => {
    const info = classifyAwsError(err("VcpuLimitExceeded", 400));
    assert.equal(info.code, "VcpuLimitExceeded");
    assert.equal(info.status, 400);
    assert.match(info.message, /VcpuLimitExceeded happened/);
  });
});

describe("GCP error classification", () => {
  const rest = (code: number, reason: string, status: string) =>
    Object.assign(new Error(JSON.stringify({ error: { code, message: `${reason}!`, errors: [{ reason, message: `${reason}!` }], status } })), { code });
  it("reads the REST error body the fallback transport puts in the message", () => {
    const info = classifyGcpError(rest(429, "rateLimitExceeded", "RESOURCE_EXHAUSTED"));
    assert.deepEqual(info, { cls: "transient", code: "rateLimitExceeded", message: "rateLimitExceeded!", status: 429 });
    assert.equal(classifyGcpError(rest(503, "backendError", "UNAVAILABLE")).cls, "transient");
    assert.equal(classifyGcpError(rest(403, "forbidden", "PERMISSION_DENIED")).cls, "permission");
    assert.equal(classifyGcpError(rest(404, "notFound", "NOT_FOUND")).cls, "not-found");
    assert.equal(classifyGcpError(rest(409, "alreadyExists", "ALREADY_EXISTS")).cls, "conflict");
  });
  it("operation errors: capacity and quota", () => {
    assert.equal(classifyGcpError({ errors: [{ code: "ZONE_RESOURCE_POOL_EXHAUSTED", message: "no" }] }).cls, "capacity");
    assert.equal(classifyGcpError({ errors: [{ code: "QUOTA_EXCEEDED", message: "Quota 'CPUS' exceeded." }] }).cls, "quota");
  });
  it("network errors are transient", () => {
    assert.equal(classifyGcpError(Object.assign(new Error("socket hang up"), { code: "ECONNRESET" })).cls, "transient");
  });
});

describe("Azure error classification", () => {
  const rest = (code: string, statusCode: number) => Object.assign(new Error(`${code}: details`), { name: "RestError", code, statusCode });
  it("classifies ARM codes", () => {
    assert.equal(classifyAzureError(rest("TooManyRequests", 429)).cls, "transient");
    assert.equal(classifyAzureError(rest("InternalServerError", 500)).cls, "transient");
    assert.equal(classifyAzureError(rest("SkuNotAvailable", 409)).cls, "capacity");
    assert.equal(classifyAzureError(rest("QuotaExceeded", 409)).cls, "quota");
    assert.equal(classifyAzureError(rest("AuthorizationFailed", 403)).cls, "permission");
    assert.equal(classifyAzureError(rest("ResourceNotFound", 404)).cls, "not-found");
    assert.equal(classifyAzureError(rest("InUseSubnetCannotBeDeleted", 400)).cls, "conflict");
  });
  it("a failed long-running operation: the code is taken from core-lro's message", () => {
    const info = classifyAzureError(new Error("The long-running operation has failed. ZonalAllocationFailed. Allocation failed. We do not have sufficient capacity."));
    assert.equal(info.cls, "capacity");
    assert.equal(info.code, "ZonalAllocationFailed");
    assert.equal(info.message, "Allocation failed. We do not have sufficient capacity.");
  });
  it("identity errors are credential errors", () => {
    assert.equal(classifyAzureError(Object.assign(new Error("no az"), { name: "CredentialUnavailableError" })).cls, "credentials");
    assert.equal(classifyAzureError(Object.assign(new Error("none"), { name: "AggregateAuthenticationError" })).cls, "credentials");
  });
  it("power and provisioning state map onto tray's states", () => {
    assert.equal(azureState([{ code: "ProvisioningState/succeeded" }, { code: "PowerState/running" }]), "running");
    assert.equal(azureState([{ code: "ProvisioningState/creating" }, { code: "PowerState/starting" }]), "pending");
    assert.equal(azureState([{ code: "ProvisioningState/succeeded" }, { code: "PowerState/deallocated" }]), "stopped");
    assert.equal(azureState([{ code: "ProvisioningState/deleting" }, { code: "PowerState/running" }]), "stopping");
    assert.equal(azureState([{ code: "ProvisioningState/failed" }]), "terminated");
  });
});

describe("tags and names", () => {
  it("every node resource gets the four tray tags; YAML tags cannot override them", () => {
    const t = nodeTags("demo", "gpu", "worker", "demo-worker-3", { team: "ml", [TAG_CLUSTER]: "spoofed" });
    assert.deepEqual(t, { team: "ml", [TAG_CLUSTER]: "demo", [TAG_NODE_TYPE]: "gpu", [TAG_NODE_KIND]: "worker", [TAG_NODE_NAME]: "demo-worker-3" });
    assert.deepEqual(clusterTags("demo", { team: "ml" }), { team: "ml", [TAG_CLUSTER]: "demo" });
  });
  it("GCE labels: lowercase, [a-z0-9_-], at most 63 characters", () => {
    assert.deepEqual(gcpLabels({ Team: "ML Research", [TAG_CLUSTER]: "Demo.Cluster", "1x": "y" }), { team: "ml-research", [TAG_CLUSTER]: "demo-cluster", "k-1x": "y" });
    assert.equal(gcpLabelValue("x".repeat(80)).length, 63);
  });
  it("resource names follow each cloud's rules", () => {
    assert.equal(gcpName("My_Cluster-head"), "my-cluster-head");
    assert.equal(gcpName("1st"), "t-1st");
    assert.ok(/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/.test(gcpName("a".repeat(70) + "-")));
    assert.equal(azureName("demo_worker.1"), "demo-worker-1");
  });
  it("zones: a comma separated string or a list, in order", () => {
    assert.deepEqual(zoneList("us-east-1a, us-east-1b"), ["us-east-1a", "us-east-1b"]);
    assert.deepEqual(zoneList(["1", "2"]), ["1", "2"]);
    assert.deepEqual(zoneList(undefined), []);
  });
});

describe("config helpers", () => {
  const cfg = (provider: Record<string, unknown>, auth?: Record<string, unknown>) => ({ cluster_name: "demo", provider: { type: "aws", ...provider }, ...(auth ? { auth } : {}) });
  it("ssh_allowed_cidr is used as given, and validated", async () => {
    assert.equal(await callerCidr(cfg({ ssh_allowed_cidr: "203.0.113.7/32" })), "203.0.113.7/32");
    await assert.rejects(callerCidr(cfg({ ssh_allowed_cidr: "everyone" })), (e: any) => isUserError(e) && /ssh_allowed_cidr/.test(e.message));
  });
  it("without ssh_allowed_cidr the caller's public address is detected (and a failure says what to set)", async () => {
    const http = await import("node:http");
    const srv = http.createServer((_q, r) => r.end("198.51.100.23\n"));
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(srv.address() as any).port}/`;
    const saved = process.env.TRAY_CHECKIP_URL;
    try {
      process.env.TRAY_CHECKIP_URL = url;
      assert.equal(await callerCidr(cfg({})), "198.51.100.23/32");
      process.env.TRAY_CHECKIP_URL = "http://127.0.0.1:1/";
      await assert.rejects(callerCidr(cfg({})), (e: any) => isUserError(e) && /set provider\.ssh_allowed_cidr/.test(e.message));
    } finally {
      if (saved === undefined) delete process.env.TRAY_CHECKIP_URL;
      else process.env.TRAY_CHECKIP_URL = saved;
      srv.close();
    }
  });
  it("the public key: from the .pub file, else derived from the private key; never the private key", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tray-unit-key-"));
    try {
      const key = path.join(dir, "id");
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "me@laptop", "-f", key]);
      const pub = fs.readFileSync(key + ".pub", "utf8").trim();
      assert.equal(await readPublicKey(cfg({}, { ssh_private_key: key })), pub);
      fs.rmSync(key + ".pub");
      const derived = await readPublicKey(cfg({}, { ssh_private_key: key }));
      assert.equal(derived.split(" ").slice(0, 2).join(" "), pub.split(" ").slice(0, 2).join(" "));
      assert.doesNotMatch(derived, /PRIVATE/);
      assert.equal(keyFingerprint(derived), keyFingerprint(pub));
      await assert.rejects(readPublicKey(cfg({}, { ssh_private_key: path.join(dir, "missing") })), (e: any) => isUserError(e) && /does not exist/.test(e.message));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  it("an unknown provider type is a UserError naming the types", async () => {
    await assert.rejects(loadProvider({ cluster_name: "x", provider: { type: "openstack" } }), (e: any) => isUserError(e) && /aws, gcp, azure/.test(e.message));
  });
  it("required provider keys are named", async () => {
    await assert.rejects(loadProvider({ cluster_name: "x", provider: { type: "gcp", availability_zone: "us-west1-a" } }), (e: any) => isUserError(e) && /provider\.project_id/.test(e.message));
    await assert.rejects(loadProvider({ cluster_name: "x", provider: { type: "azure", location: "westus2" } }), (e: any) => isUserError(e) && /provider\.resource_group/.test(e.message));
  });
});

describe("lazy SDK loading", () => {
  it("loading and constructing a cloud provider loads no cloud SDK; its first API call does", () => {
    const script = `
      const { loadProvider } = await import(${JSON.stringify(path.resolve("src/providers/index.ts"))});
      const sdk = () => Object.keys(require("node:module")._cache).filter((k) => /@aws-sdk|@google-cloud|@azure\\//.test(k)).length;
      for (const provider of [{ type: "aws", region: "us-east-1" }, { type: "gcp", project_id: "p", availability_zone: "us-west1-a" }, { type: "azure", location: "l", resource_group: "r", subscription_id: "s" }]) {
        const p = await loadProvider({ cluster_name: "x", provider });
        if (p.name !== provider.type) throw new Error("wrong provider " + p.name);
      }
      const before = sdk();
      await import("@aws-sdk/client-ec2");
      console.log(JSON.stringify({ before, after: sdk() }));
    `;
    const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", `import { createRequire } from "node:module"; const require = createRequire(${JSON.stringify(path.resolve("package.json"))}); ${script}`], {
      encoding: "utf8",
      cwd: path.resolve("."),
      env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true" },
    });
    assert.equal(r.status, 0, r.stderr);
    const { before, after } = JSON.parse(r.stdout.trim().split("\n").pop()!);
    assert.equal(before, 0, "no SDK module loaded before the first API call");
    assert.ok(after > 0, "the check itself sees an SDK once it is loaded");
  });
});
