// Provider conformance: one suite, run against every cloud provider through its emulator
// (real SDK -> emulated control plane -> real namespaced sshd hosts).
//   run -> query by tag (from a fresh provider: the local state is lost) -> wait -> SSH in as
//   the image's user with the key the request installed -> terminate -> cleanup leaves nothing.
// Plus: bootstrap is idempotent and opens SSH only to the caller, throttling is retried,
// a zone without capacity falls over to the next, capacity everywhere is one sentence with
// the cloud's code, missing credentials are a clear error.
// Needs root, iproute2 and openssh-server; skipped otherwise.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { isUserError } from "../../src/errors.js";
import { loadProvider } from "../../src/providers/index.js";
import { TAG_CLUSTER, TAG_NODE_KIND, TAG_NODE_NAME, TAG_NODE_TYPE, type Provider, type RunRequest } from "../../src/providers/interface.js";
import { emulatorUnavailable, harnesses, withEnv, CALLER_CIDR, type CloudHarness, type EmulatorBase } from "../emulator/index.js";
import type { AwsEmulator } from "../emulator/aws.js";
import type { GcpEmulator } from "../emulator/gcp.js";
import type { AzureEmulator } from "../emulator/azure.js";

const skip = emulatorUnavailable();
const keyDir = fs.mkdtempSync(path.join(os.tmpdir(), "tray-conf-key-"));
const keyFile = path.join(keyDir, "id_ed25519");
before(() => {
  if (!skip) execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "tray-conformance", "-f", keyFile]);
});
after(() => fs.rmSync(keyDir, { recursive: true, force: true }));

function sshWhoami(host: string, user: string): { ok: boolean; out: string } {
  const r = spawnSync(
    "ssh",
    ["-i", keyFile, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", `${user}@${host}`, "whoami; hostname"],
    { encoding: "utf8", timeout: 20_000 },
  );
  return { ok: r.status === 0, out: (r.stdout + r.stderr).trim() };
}

/** Tag maps of every per-node resource the emulator holds for the cluster (instances, disks, NICs, IPs). */
function nodeResourceTags(cloud: string, emu: EmulatorBase, cluster: string): { what: string; tags: Record<string, string> }[] {
  const out: { what: string; tags: Record<string, string> }[] = [];
  if (cloud === "aws") {
    const e = emu as AwsEmulator;
    for (const i of e.instances.values()) if (i.tags[TAG_CLUSTER] === cluster && i.state !== "terminated") out.push({ what: `instance ${i.id}`, tags: i.tags });
    for (const v of e.volumes.values()) if (v.tags[TAG_CLUSTER] === cluster) out.push({ what: `volume ${v.id}`, tags: v.tags });
    for (const n of e.nics.values()) if (n.tags[TAG_CLUSTER] === cluster) out.push({ what: `eni ${n.id}`, tags: n.tags });
  } else if (cloud === "gcp") {
    const e = emu as GcpEmulator;
    for (const i of e.instances.values()) if (i.labels[TAG_CLUSTER] === cluster) out.push({ what: `instance ${i.name}`, tags: i.labels });
    for (const d of e.disks.values()) out.push({ what: `disk ${d.name}`, tags: d.labels });
  } else {
    const e = emu as AzureEmulator;
    for (const r of e.resources.values()) {
      if (!/virtualMachines|disks|networkInterfaces|publicIPAddresses/.test(r.type)) continue;
      out.push({ what: `${r.type} ${r.name}`, tags: r.tags });
    }
  }
  return out;
}

/** What the emulator was asked to create for each node: size and spot. */
function nodeSpecs(cloud: string, emu: EmulatorBase, cluster: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (cloud === "aws") {
    for (const i of (emu as AwsEmulator).instances.values()) if (i.tags[TAG_CLUSTER] === cluster && i.state !== "terminated") out[i.tags[TAG_NODE_NAME]!] = `${i.type}${i.spot ? " spot" : ""}`;
  } else if (cloud === "gcp") {
    for (const i of (emu as GcpEmulator).instances.values()) {
      if (i.labels[TAG_CLUSTER] !== cluster) continue;
      const spot = (i.scheduling as any).provisioningModel === "SPOT" || (i.scheduling as any).preemptible === true;
      out[i.labels[TAG_NODE_NAME]!] = `${i.machineType}${spot ? " spot" : ""}`;
    }
  } else {
    for (const r of (emu as AzureEmulator).resources.values()) {
      if (r.type !== "Microsoft.Compute/virtualMachines" || r.tags[TAG_CLUSTER] !== cluster) continue;
      out[r.tags[TAG_NODE_NAME]!] = `${r.properties.hardwareProfile?.vmSize}${r.properties.priority === "Spot" ? " spot" : ""}`;
    }
  }
  return out;
}

const EXPECTED_SPECS: Record<string, [string, string]> = {
  aws: ["m5.large", "m5.xlarge spot"],
  gcp: ["n2-standard-2", "n2-standard-4 spot"],
  azure: ["Standard_D2s_v5", "Standard_D4s_v5 spot"],
};

/** Instance-create requests the emulator has seen. */
function createRequests(cloud: string, emu: EmulatorBase): number {
  const action = cloud === "aws" ? "RunInstances" : cloud === "gcp" ? "instances.insert" : "PUT Microsoft.Compute/virtualMachines";
  return emu.log.filter((l) => l.action === action).length;
}

/** The emulator's network rules of the cluster, normalised: [protocol, ports, source]. */
function ingressRules(cloud: string, emu: EmulatorBase, cluster: string): string[] {
  if (cloud === "aws") {
    const e = emu as AwsEmulator;
    const sgs = [...e.securityGroups.values()].filter((g) => g.tags[TAG_CLUSTER] === cluster);
    assert.equal(sgs.length, 1, "one security group");
    return sgs[0]!.ingress.flatMap((r: any) => [
      ...r.cidrs.map((c: string) => `${r.ipProtocol} ${r.fromPort ?? "*"}-${r.toPort ?? "*"} from ${c}`),
      ...r.groups.map((g: string) => `${r.ipProtocol} ${r.fromPort ?? "*"}-${r.toPort ?? "*"} from ${g === sgs[0]!.id ? "cluster" : g}`),
    ]).sort();
  }
  if (cloud === "gcp") {
    const e = emu as GcpEmulator;
    const rules = [...e.firewalls.values()].filter((f) => f.description.includes(`[${TAG_CLUSTER}=${cluster}]`));
    return rules
      .flatMap((f) =>
        f.allowed.map((a) => {
          const src = f.sourceRanges.length ? f.sourceRanges.join(",") : f.sourceTags.includes(`tray-${cluster}`) ? "cluster" : f.sourceTags.join(",");
          assert.deepEqual(f.targetTags, [`tray-${cluster}`], "rules apply to the cluster's instances only");
          return `${a.IPProtocol.toLowerCase() === "all" ? "-1" : a.IPProtocol} ${(a.ports ?? ["*"]).join(",")} from ${src}`;
        }),
      )
      .sort();
  }
  const e = emu as AzureEmulator;
  const nsgs = [...e.resources.values()].filter((r) => r.type === "Microsoft.Network/networkSecurityGroups" && r.tags[TAG_CLUSTER] === cluster);
  assert.equal(nsgs.length, 1, "one network security group");
  return nsgs[0]!.properties.securityRules
    .filter((r: any) => (r.properties ?? r).direction === "Inbound" && (r.properties ?? r).access === "Allow")
    .map((r: any) => {
      const p = r.properties ?? r;
      const src = p.sourceAddressPrefix === "VirtualNetwork" ? "cluster" : p.sourceAddressPrefix;
      return `${p.protocol === "*" ? "-1" : p.protocol.toLowerCase()} ${p.destinationPortRange} from ${src}`;
    })
    .sort();
}

const EXPECTED_RULES: Record<string, string[]> = {
  aws: ["-1 *-* from cluster", `tcp 22-22 from ${CALLER_CIDR}`],
  gcp: ["-1 * from cluster", `tcp 22 from ${CALLER_CIDR}`],
  azure: ["-1 * from cluster", `tcp 22 from ${CALLER_CIDR}`],
};

async function makeProvider(h: CloudHarness<any>, emu: EmulatorBase, cluster: string, extra: Record<string, unknown> = {}): Promise<Provider> {
  const config = { cluster_name: cluster, provider: { ...h.provider(emu, cluster), ...extra }, auth: { ssh_user: h.user, ssh_private_key: keyFile } };
  const deps = h.deps(emu);
  if (!deps) return loadProvider(config);
  const mod = await import(`../../src/providers/${h.cloud}/index.js`);
  return mod.createProvider(config, deps);
}

function requests(h: CloudHarness<any>, cluster: string, workers = 2): RunRequest[] {
  const nc = h.nodeConfig();
  return [
    { clusterName: cluster, nodeType: "head", kind: "head", count: 1, nodeConfig: nc.head, names: [`${cluster}-head`], tags: {} },
    { clusterName: cluster, nodeType: "worker", kind: "worker", count: workers, nodeConfig: nc.worker, names: Array.from({ length: workers }, (_, i) => `${cluster}-worker-${i + 1}`), tags: { role: "compute" } },
  ];
}

for (const h of harnesses) {
  describe(`provider conformance: ${h.cloud}`, { skip: skip ?? emulatorUnavailable(h.cloud), concurrency: false }, () => {
    let emu: EmulatorBase;
    let restoreEnv: () => void = () => {};
    before(async () => {
      emu = await h.start();
      restoreEnv = withEnv(h.env(emu));
    });
    after(async () => {
      restoreEnv();
      await emu?.stop();
    });

    it("run -> query by tag -> wait -> ssh -> terminate -> cleanup leaves nothing", async () => {
      const cluster = `conf-${h.cloud}`;
      const p = await makeProvider(h, emu, cluster);
      assert.equal(p.name, h.cloud);
      assert.equal(p.capabilities.creates, true);
      assert.equal(p.capabilities.ssh, true);
      await p.bootstrap();
      await p.bootstrap(); // idempotent
      assert.deepEqual(ingressRules(h.cloud, emu, cluster), EXPECTED_RULES[h.cloud], "SSH from the caller only, everything within the cluster, nothing else");

      // the user now runs tray from elsewhere: SSH follows, the old address loses access
      const moved = await makeProvider(h, emu, cluster, { ssh_allowed_cidr: "192.0.2.0/24" });
      await moved.bootstrap();
      assert.deepEqual(ingressRules(h.cloud, emu, cluster), EXPECTED_RULES[h.cloud]!.map((r) => r.replace(CALLER_CIDR, "192.0.2.0/24")).sort());
      await p.bootstrap();
      assert.deepEqual(ingressRules(h.cloud, emu, cluster), EXPECTED_RULES[h.cloud]);

      emu.faults.throttle = 3;
      emu.faults.noCapacityZones = [h.zones(emu)[0]!];
      const created = await p.runInstances(requests(h, cluster));
      assert.equal(created.length, 3);
      assert.ok(emu.stats.throttled >= 3, "throttled requests were answered and retried");
      assert.ok(emu.stats.capacityErrors >= 1, "the first zone answered with no capacity");
      emu.faults.noCapacityZones = [];

      // a fresh provider finds the nodes by tag alone (a lost ~/.tray)
      const fresh = await makeProvider(h, emu, cluster);
      const found = await fresh.queryInstances({ clusterName: cluster });
      assert.deepEqual(found.map((r) => r.name), [`${cluster}-head`, `${cluster}-worker-1`, `${cluster}-worker-2`]);
      assert.deepEqual(found.map((r) => r.kind), ["head", "worker", "worker"]);
      assert.deepEqual((await fresh.queryInstances({ clusterName: cluster, kind: "head" })).map((r) => r.name), [`${cluster}-head`]);
      assert.deepEqual(await fresh.queryInstances({ clusterName: "some-other-cluster" }), []);

      const ready = await fresh.waitInstances(found.map((r) => r.id), "running", 60_000);
      for (const r of ready) {
        assert.equal(r.state, "running");
        assert.equal(r.zone, h.zones(emu)[1], `${r.name} fell over to the second zone`);
        assert.ok(r.privateIp && r.publicIp && r.ssh, `${r.name} has addresses`);
        assert.equal(r.ssh!.host, r.publicIp, "public address unless use_internal_ips");
        assert.equal(r.ssh!.user, h.user);
        assert.equal(r.tags[TAG_CLUSTER], cluster);
        assert.equal(r.tags[TAG_NODE_NAME], r.name);
        assert.equal(r.tags.team, "tray-tests", "extra tags from the YAML");
        const s = sshWhoami(r.ssh!.host, r.ssh!.user);
        assert.ok(s.ok, `ssh ${r.ssh!.user}@${r.ssh!.host}: ${s.out}`);
        assert.equal(s.out.split("\n")[0], h.user);
      }
      // instance type / machine type / VM size and spot from node_config
      const [headSpec, workerSpec] = EXPECTED_SPECS[h.cloud]!;
      assert.deepEqual(nodeSpecs(h.cloud, emu, cluster), { [`${cluster}-head`]: headSpec, [`${cluster}-worker-1`]: workerSpec, [`${cluster}-worker-2`]: workerSpec });
      // every per-node resource carries all four tags
      const tagged = nodeResourceTags(h.cloud, emu, cluster);
      assert.ok(tagged.length >= 6, `instances and their disks are tagged (${tagged.map((t) => t.what).join(", ")})`);
      for (const t of tagged) {
        for (const k of [TAG_CLUSTER, TAG_NODE_TYPE, TAG_NODE_KIND, TAG_NODE_NAME]) assert.ok(t.tags[k], `${t.what} has tag ${k}: ${JSON.stringify(t.tags)}`);
      }

      const removed = await fresh.terminateInstances(ready.map((r) => r.id));
      assert.equal(removed.filter((r) => r.kind === "instance").length, 3);
      assert.deepEqual(await fresh.queryInstances({ clusterName: cluster }), []);
      const shared = await fresh.cleanup();
      assert.ok(shared.length >= 1, "cleanup reports what it removed");
      await emu.settle();
      assert.deepEqual(emu.inventory(cluster), { instances: [], securityGroups: [], firewallRules: [], nics: [], publicIps: [], disks: [], keyPairs: [], networks: [] });
      assert.deepEqual(await fresh.cleanup(), [], "cleanup again finds nothing");
    });

    it("no capacity in any zone: one sentence with the cloud's code, nothing left behind", async () => {
      const cluster = `cap-${h.cloud}`;
      const p = await makeProvider(h, emu, cluster);
      await p.bootstrap();
      emu.faults.noCapacityZones = h.zones(emu);
      try {
        await assert.rejects(
          () => p.runInstances([requests(h, cluster, 1)[1]!]),
          (e: any) => {
            assert.ok(isUserError(e), `a UserError, got ${e?.stack}`);
            assert.match(e.message, new RegExp(h.capacityCode));
            assert.doesNotMatch(e.message, /\n/);
            return true;
          },
        );
      } finally {
        emu.faults.noCapacityZones = [];
      }
      const left = await p.queryInstances({ clusterName: cluster });
      await p.terminateInstances(left.map((r) => r.id));
      await p.cleanup();
      await emu.settle();
      const inv = emu.inventory(cluster);
      assert.deepEqual(Object.values(inv).flat(), [], JSON.stringify(inv));
    });

    it("permission and quota errors: one sentence with the cloud's code, not retried", async () => {
      const cluster = `err-${h.cloud}`;
      const p = await makeProvider(h, emu, cluster);
      await p.bootstrap();
      for (const [fault, code, what] of [
        ["denyCreates", h.permissionCode, /lack permission/],
        ["quotaCreates", h.quotaCode, /quota/],
      ] as const) {
        emu.faults[fault] = 1;
        const creates = createRequests(h.cloud, emu);
        await assert.rejects(
          () => p.runInstances([requests(h, cluster, 1)[1]!]),
          (e: any) => {
            assert.ok(isUserError(e), `a UserError, got ${e?.stack}`);
            assert.match(e.message, new RegExp(`\\(${code}: `));
            assert.match(e.message, what);
            assert.doesNotMatch(e.message, /\n/);
            return true;
          },
        );
        assert.equal(emu.faults[fault], 0);
        assert.equal(createRequests(h.cloud, emu) - creates, 1, "asked once: not retried, no other zone tried");
      }
      const left = await p.queryInstances({ clusterName: cluster });
      await p.terminateInstances(left.map((r) => r.id));
      await p.cleanup();
      await emu.settle();
      assert.deepEqual(Object.values(emu.inventory(cluster)).flat(), [], JSON.stringify(emu.inventory(cluster)));
    });

    it("a create whose answer was lost (5xx after it was done) is retried without a duplicate", async (t) => {
      if (h.cloud === "azure") return t.skip("Azure creates are PUTs of a named resource: idempotent by nature");
      const cluster = `dup-${h.cloud}`;
      const p = await makeProvider(h, emu, cluster);
      emu.faults.lostCreateAnswers = 1;
      const recs = await p.runInstances([requests(h, cluster, 1)[0]!]);
      assert.equal(emu.faults.lostCreateAnswers, 0, "the fault was hit");
      assert.equal(recs.length, 1);
      await p.waitInstances(recs.map((r) => r.id), "running", 60_000);
      assert.equal(emu.inventory(cluster).instances.length, 1, "one instance, not two");
      await p.terminateInstances(recs.map((r) => r.id));
      await p.cleanup();
      await emu.settle();
      assert.deepEqual(Object.values(emu.inventory(cluster)).flat(), []);
    });

    it("an instance that never becomes reachable is still reported running (SSH is the launcher's business)", async () => {
      const cluster = `unr-${h.cloud}`;
      const p = await makeProvider(h, emu, cluster);
      emu.faults.unreachable = 1;
      const [rec] = await p.runInstances([requests(h, cluster, 1)[0]!]);
      const [ready] = await p.waitInstances([rec!.id], "running", 60_000);
      assert.ok(ready!.ssh);
      assert.equal(sshWhoami(ready!.ssh!.host, h.user).ok, false);
      await p.terminateInstances([rec!.id]);
      await p.cleanup();
      await emu.settle();
      assert.deepEqual(Object.values(emu.inventory(cluster)).flat(), []);
    });

    it("use_internal_ips: SSH goes to the private address; stop where supported", async () => {
      const cluster = `int-${h.cloud}`;
      const config = { cluster_name: cluster, provider: { ...h.provider(emu, cluster), use_internal_ips: true }, auth: { ssh_user: h.user, ssh_private_key: keyFile } };
      const deps = h.deps(emu);
      const p: Provider = deps ? (await import(`../../src/providers/${h.cloud}/index.js`)).createProvider(config, deps) : await loadProvider(config);
      const [rec] = await p.runInstances([requests(h, cluster, 1)[0]!]);
      const [ready] = await p.waitInstances([rec!.id], "running", 60_000);
      assert.equal(ready!.ssh!.host, ready!.privateIp);
      if (h.cloud !== "aws") assert.equal(ready!.publicIp, undefined, "no public address is created"); // EC2's default subnets map one anyway
      const s = sshWhoami(ready!.ssh!.host, h.user);
      assert.ok(s.ok, s.out);
      assert.equal(p.capabilities.stop, true);
      await p.stopInstances!([rec!.id]);
      const [stopped] = await p.waitInstances([rec!.id], "stopped", 60_000);
      assert.equal(stopped!.state, "stopped");
      await p.terminateInstances([rec!.id]);
      await p.cleanup();
      await emu.settle();
      assert.deepEqual(Object.values(emu.inventory(cluster)).flat(), [], JSON.stringify(emu.inventory(cluster)));
    });

    it("missing credentials: a clear UserError", async () => {
      const restore = withEnv(h.noCredentials(emu));
      try {
        const p = await makeProvider(h, emu, `nocred-${h.cloud}`);
        await assert.rejects(
          () => p.bootstrap(),
          (e: any) => {
            assert.ok(isUserError(e), `a UserError, got ${e?.stack}`);
            assert.match(e.message, /credentials/i);
            assert.ok(e.hint, "says how to provide credentials");
            return true;
          },
        );
      } finally {
        restore();
      }
    });
  });
}
