// tray on each cloud, end to end through the real CLI: the real SDKs talk to the emulator
// (test/emulator), which backs every instance with a real namespaced sshd host, so the SSH
// bootstrap, the agents joining the head and `tray submit` all run for real.
// Per cloud: up (head + 2 workers; throttling and a zone without capacity injected on the way)
// -> submit a job whose tasks run on all 3 nodes -> up again changes nothing -> up after the
// local state is lost finds the cluster by tag and creates nothing -> down -> the emulator
// holds no instance, security group, firewall rule, NIC, IP, disk, key pair or network of the
// cluster. And: missing credentials are one clear sentence.
// Run: node --test --import tsx test/e2e/cloud.test.ts   (root, iproute2, openssh-server)
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import YAML from "yaml";
import { emulatorUnavailable, harnesses, type CloudHarness, type EmulatorBase } from "../emulator/index.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/**
 * A private copy of dist/ for this test process: dist/ is rebuilt (chunks deleted) whenever
 * someone builds after a source change, which would pull the CLI out from under a running
 * test. The copy lives under node_modules/ so the bundle's external packages still resolve.
 */
let DIST = "";
function privateDist(): string {
  if (DIST) return DIST;
  for (let attempt = 1; ; attempt++) {
    execFileSync(process.execPath, [path.join(ROOT, "scripts/build.mjs")], { stdio: ["ignore", "ignore", "inherit"] });
    const dir = path.join(ROOT, "node_modules", ".cache", `tray-e2e-cloud-${process.pid}`, "dist");
    fs.rmSync(dir, { recursive: true, force: true });
    fs.cpSync(path.join(ROOT, "dist"), dir, { recursive: true });
    try {
      execFileSync(process.execPath, [path.join(dir, "cli.js"), "--help"], { stdio: "ignore" });
      return (DIST = dir);
    } catch (e) {
      if (attempt >= 3) throw e; // copied in the middle of someone's build: build and copy again
    }
  }
}
after(() => {
  if (DIST) fs.rmSync(path.dirname(DIST), { recursive: true, force: true });
});
const ONLY = process.env.TRAY_E2E_CLOUDS?.split(",").map((s) => s.trim());

interface Cli {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

function missingPrereq(cloud: CloudHarness<any>["cloud"]): string | undefined {
  const u = emulatorUnavailable(cloud);
  if (u) return u;
  if (!fs.existsSync(path.join(ROOT, "src/launcher/remote.ts"))) return "needs the SSH launcher (src/launcher/remote.ts)";
  return undefined;
}


/** Requests that create machines, per cloud (to prove a second `up` creates nothing). */
function creates(cloud: string, emu: EmulatorBase): number {
  return emu.log.filter((l) =>
    cloud === "aws" ? l.action === "RunInstances" : cloud === "gcp" ? l.action === "instances.insert" : l.action === "PUT Microsoft.Compute/virtualMachines",
  ).length;
}

for (const h of harnesses as CloudHarness<any>[]) {
  const skip = missingPrereq(h.cloud) ?? (ONLY && !ONLY.includes(h.cloud) ? `TRAY_E2E_CLOUDS=${ONLY.join(",")}` : undefined);
  describe(`tray on ${h.cloud} (emulated control plane, real hosts, real CLI)`, { skip, concurrency: false }, () => {
    let emu: EmulatorBase;
    let tmp = "";
    let cfg = "";
    let env: Record<string, string> = {};
    const cluster = `e2e-${h.cloud}`;

    function tray(args: string[], extraEnv: Record<string, string | undefined> = {}, timeoutMs = 240_000): Promise<Cli> {
      const t = Date.now();
      const e: Record<string, string | undefined> = { ...process.env, TRAY_HOME: path.join(tmp, "home"), TRAY_DIST: DIST, ...env, ...extraEnv };
      for (const k of Object.keys(e)) if (e[k] === undefined) delete e[k];
      return new Promise((resolve) => {
        execFile(process.execPath, [path.join(DIST, "cli.js"), ...args], { cwd: tmp, env: e as NodeJS.ProcessEnv, timeout: timeoutMs, maxBuffer: 32 << 20 }, (err, stdout, stderr) =>
          resolve({ code: err ? (typeof (err as any).code === "number" ? (err as any).code : 1) : 0, stdout, stderr, ms: Date.now() - t }),
        );
      });
    }

    before(async () => {
      privateDist();
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), `tray-e2e-${h.cloud}-`));
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "tray-e2e", "-f", path.join(tmp, "id_ed25519")]);
      fs.copyFileSync(path.join(ROOT, "test/jobs/spread-nodes.ts"), path.join(tmp, "job.ts"));
      emu = await h.start();
      env = h.env(emu);
      const nc = h.nodeConfig();
      cfg = path.join(tmp, `${h.cloud}.yaml`);
      fs.writeFileSync(
        cfg,
        YAML.stringify({
          cluster_name: cluster,
          provider: h.provider(emu, cluster),
          auth: { ssh_user: h.user, ssh_private_key: path.join(tmp, "id_ed25519") },
          available_node_types: {
            head: { resources: { CPU: 2 }, node_config: nc.head },
            worker: { resources: { CPU: 2 }, min_workers: 2, max_workers: 2, node_config: nc.worker },
          },
          head_node_type: "head",
          max_workers: 2,
        }),
      );
      delete process.env.SSH_AUTH_SOCK;
    });

    after(async () => {
      if (cfg && emu && Object.values(emu.inventory(cluster)).flat().length) await tray(["down", cfg, "-y"]); // never leave hosts behind
      await emu?.stop();
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    });

    test("up: head + 2 workers, through throttling and a zone without capacity", async (t) => {
      emu.faults.throttle = 3;
      emu.faults.noCapacityZones = [h.zones(emu)[0]!];
      const r = await tray(["up", cfg, "-y"], { TRAY_DEBUG: "1" });
      emu.faults.noCapacityZones = [];
      assert.equal(r.code, 0, r.stderr + r.stdout);
      t.diagnostic(`tray up on ${h.cloud}, 3 nodes from nothing: ${r.ms} ms`);
      assert.ok(emu.stats.throttled >= 3, "throttled requests were retried");
      assert.ok(emu.stats.capacityErrors >= 1, "the first zone had no capacity");
      assert.equal(emu.inventory(cluster).instances.length, 3);
      const st = await tray(["status", "--json"]);
      assert.equal(st.code, 0, st.stderr);
      const s = JSON.parse(st.stdout);
      assert.deepEqual(s.nodes.map((n: any) => n.name).sort(), [`${cluster}-head`, `${cluster}-worker-1`, `${cluster}-worker-2`]);
      assert.ok(s.nodes.every((n: any) => n.alive), JSON.stringify(s.nodes));
    });

    test("submit: a job whose tasks run on all 3 nodes", async () => {
      const st = JSON.parse((await tray(["status", "--json"])).stdout);
      const r = await tray(["submit", path.join(tmp, "job.ts"), "--", "12"]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const m = /NODES (\[.*\])/.exec(r.stdout);
      assert.ok(m, r.stdout);
      assert.deepEqual(JSON.parse(m![1]!), st.nodes.map((n: any) => n.nodeId).sort());
    });

    test("up again changes nothing", async () => {
      const before = creates(h.cloud, emu);
      const r = await tray(["up", cfg, "-y"]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      assert.match(r.stdout, /nothing changed/);
      assert.equal(creates(h.cloud, emu), before, "no machine created");
      assert.equal(emu.inventory(cluster).instances.length, 3);
    });

    test("up with the local state lost finds the cluster by tag and creates nothing", async () => {
      const before = creates(h.cloud, emu);
      fs.rmSync(path.join(tmp, "home", "clusters", cluster), { recursive: true, force: true });
      const r = await tray(["up", cfg, "-y"]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      assert.equal(creates(h.cloud, emu), before, "no machine created");
      const st = await tray(["status", "--json"]);
      assert.equal(st.code, 0, st.stderr);
      assert.equal(JSON.parse(st.stdout).nodes.length, 3);
    });

    test("down: the emulator holds nothing of the cluster", async () => {
      const r = await tray(["down", cfg, "-y"]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      await emu.settle();
      assert.deepEqual(emu.inventory(cluster), { instances: [], securityGroups: [], firewallRules: [], nics: [], publicIps: [], disks: [], keyPairs: [], networks: [] });
      assert.equal(emu.pool.list().length, 0, "every host is gone");
      // what down removed is listed
      const out = r.stdout + r.stderr;
      for (const n of [`${cluster}-head`, `${cluster}-worker-1`, `${cluster}-worker-2`]) assert.match(out, new RegExp(n));
      const kinds: Record<string, string[]> = {
        aws: ["instance", "security-group", "key-pair"],
        gcp: ["instance", "disk", "firewall-rule"],
        azure: ["instance", "disk", "nic", "public-ip", "network", "security-group"],
      };
      for (const k of kinds[h.cloud]!) assert.match(out, new RegExp(`^\\s+${k} `, "m"), `down lists the ${k}s it removed:\n${out}`);
    });

    // downRemote asks the provider for the cluster's instances by tag: the local state is
    // not needed to remove everything.
    test("down with the local state lost still removes everything", async () => {
      const up = await tray(["up", cfg, "-y"]);
      assert.equal(up.code, 0, up.stderr + up.stdout);
      fs.rmSync(path.join(tmp, "home", "clusters", cluster), { recursive: true, force: true });
      const r = await tray(["down", cfg, "-y"]);
      if (r.code !== 0 || Object.values(emu.inventory(cluster)).flat().length) {
        // leave nothing for the next tests: rebuild the state from the cloud, then down
        await tray(["up", cfg, "-y"]);
        await tray(["down", cfg, "-y"]);
      }
      assert.equal(r.code, 0, r.stderr + r.stdout);
      await emu.settle();
      assert.deepEqual(Object.values(emu.inventory(cluster)).flat(), []);
    });

    test("an instance that never becomes reachable: up fails naming it, down still removes everything", async () => {
      const name = `${cluster}-unr`;
      const f = path.join(tmp, "unreachable.yaml");
      fs.writeFileSync(
        f,
        YAML.stringify({
          cluster_name: name,
          provider: h.provider(emu, name),
          auth: { ssh_user: h.user, ssh_private_key: path.join(tmp, "id_ed25519") },
          available_node_types: { head: { resources: { CPU: 1 }, node_config: h.nodeConfig().head } },
          head_node_type: "head",
          max_workers: 0,
        }),
      );
      emu.faults.unreachable = 1;
      const r = await tray(["up", f, "-y"], { TRAY_SSH_WAIT_MS: "4000" });
      emu.faults.unreachable = 0;
      assert.notEqual(r.code, 0, r.stdout);
      assert.match(r.stderr + r.stdout, new RegExp(`${name}-head|10\\.78\\.`), r.stderr);
      assert.doesNotMatch(r.stderr, /^\s+at /m, r.stderr);
      const d = await tray(["down", f, "-y"], { TRAY_SSH_WAIT_MS: "2000" });
      assert.equal(d.code, 0, d.stderr + d.stdout);
      await emu.settle();
      assert.deepEqual(Object.values(emu.inventory(name)).flat(), [], JSON.stringify(emu.inventory(name)));
    });

    test("missing credentials: one clear sentence, no stack trace", async () => {
      const r = await tray(["up", cfg, "-y"], h.noCredentials(emu), 60_000);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /credentials/i);
      assert.doesNotMatch(r.stderr, /^\s+at /m, r.stderr);
      assert.equal(emu.inventory(cluster).instances.length, 0);
    });
  });
}
