// A real tray cluster on 3 namespaced sshd hosts, driven through the CLI as a user would, as
// the non-root user `tray`: up -> status shows 3 nodes -> submit a job whose tasks run on all
// 3 -> exec, rsync-up/down, get-head-ip/get-worker-ips -> a host's network cut mid-job ->
// down leaves no agent process and no tray files. Also: an unreachable host and a changed
// host key, through the CLI. Run: node --test --import tsx test/e2e/ssh-cluster.test.ts
import assert from "node:assert/strict";
import { execFile, execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { TestHosts, testHostsUnavailable, type TestHost } from "../helpers/testhosts.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const th = new TestHosts({ net: "10.77.2", bridge: "trbr4", nsPrefix: "tray-e", vethPrefix: "tre" });
const [H1, H2, H3] = ["10.77.2.11", "10.77.2.12", "10.77.2.13"];
let hosts: TestHost[] = [];
let tmp = "";

/**
 * A private copy of dist/ for this test process (as test/e2e/cloud.test.ts does): dist/ is
 * rebuilt whenever someone builds after a source change, which would change the agent under
 * a running test and delete the CLI's chunks. Under node_modules/ so packages still resolve.
 */
let DIST = "";
function privateDist(): string {
  for (let attempt = 1; ; attempt++) {
    execFileSync(process.execPath, [path.join(ROOT, "scripts/build.mjs")], { stdio: ["ignore", "ignore", "inherit"] });
    const dir = path.join(ROOT, "node_modules", ".cache", `tray-e2e-ssh-${process.pid}`, "dist");
    fs.rmSync(dir, { recursive: true, force: true });
    fs.cpSync(path.join(ROOT, "dist"), dir, { recursive: true });
    try {
      execFileSync(process.execPath, [path.join(dir, "cli.js"), "--help"], { stdio: "ignore" });
      return dir;
    } catch (e) {
      if (attempt >= 3) throw e; // copied in the middle of someone's build: build and copy again
    }
  }
}

function agentSupportsNodes(): boolean {
  try {
    return !fs.readFileSync(path.join(DIST, "agent.js"), "utf8").includes("role node (joining a head) arrives with multi-node support");
  } catch {
    return false;
  }
}

interface Cli { code: number; stdout: string; stderr: string; ms: number }

/** The real CLI (the private copy of dist/cli.js, with its agent bundle). */
function tray(args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): Promise<Cli> {
  const t = Date.now();
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(DIST, "cli.js"), ...args], { env: { ...process.env, TRAY_HOME: path.join(tmp, "home"), TRAY_DIST: DIST, ...env }, timeout: timeoutMs, maxBuffer: 32 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as any).code ?? 1) : 0, stdout, stderr, ms: Date.now() - t }),
    );
  });
}

/**
 * attach/exec/rsync/get-*-ip through the CLI. Until src/cli/main.ts registers them, they run
 * through a program that registers just those commands (same files, same library calls).
 */
let remoteCommandsWired = false;
function trayRemote(args: string[], env: Record<string, string> = {}, input?: string): Promise<Cli> {
  if (remoteCommandsWired && input === undefined) return tray(args, env);
  const t = Date.now();
  const script = `
    import { Command } from "commander";
    const p = new Command().name("tray").exitOverride();
    for (const f of ["attach", "exec", "rsync", "ips"]) (await import(${JSON.stringify(ROOT)} + "/src/cli/" + f + ".ts")).register(p);
    await p.parseAsync(process.argv.slice(1), { from: "user" });`;
  const argv = remoteCommandsWired ? [path.join(DIST, "cli.js"), ...args] : ["--import", "tsx", "--input-type=module", "-e", script, "--", ...args];
  return new Promise((resolve) => {
    const child = execFile(process.execPath, argv, { cwd: ROOT, env: { ...process.env, TRAY_HOME: path.join(tmp, "home"), TRAY_DIST: DIST, ...env }, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as any).code ?? 1) : 0, stdout, stderr, ms: Date.now() - t }),
    );
    if (input !== undefined) child.stdin!.end(input);
  });
}

function yaml(name: string, head: string, workers: string[], user = "tray"): string {
  const f = path.join(tmp, `${name}.yaml`);
  fs.writeFileSync(f, `cluster_name: ${name}
provider:
  type: ssh
  head_ip: ${head}
  worker_ips: [${workers.join(", ")}]
auth:
  ssh_user: ${user}
  ssh_private_key: ${hosts[0]!.privateKeyPath}
setup_commands:
  - echo set up on $(hostname) > ~/setup.txt
`);
  return f;
}


function agentProcs(i: number): string[] {
  return th.processes(i).filter((c) => c.includes("agent.js"));
}

describe("tray on 3 SSH hosts (real agent, CLI)", { skip: testHostsUnavailable() }, () => {
  let cfg = "";
  before(() => {
    DIST = privateDist();
    hosts = th.up(3);
    // hosts keep their /tmp between runs: start from a clean one, so leftovers are this run's
    for (const i of [1, 2, 3]) th.cleanTmp(i);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tray-e2e-ssh-"));
    fs.copyFileSync(path.join(ROOT, "test/jobs/spread-nodes.ts"), path.join(tmp, "job.ts"));
    delete process.env.SSH_AUTH_SOCK;
    const help = execFileSync(process.execPath, [path.join(DIST, "cli.js"), "--help"], { encoding: "utf8" });
    remoteCommandsWired = /\bexec\b/.test(help) && /rsync-up/.test(help);
  });
  after(async () => {
    // never leave agents behind, whatever failed above
    if (cfg) await tray(["down", cfg]);
    th.down();
    fs.rmSync(tmp, { recursive: true, force: true });
    if (DIST) fs.rmSync(path.dirname(DIST), { recursive: true, force: true });
  });

  test("up: 3 hosts from nothing, then again with nothing changed; status shows 3 nodes", async (t) => {
    if (!agentSupportsNodes()) t.diagnostic("the agent cannot join a head yet (--role node): a head-only cluster is used");
    const workers = agentSupportsNodes() ? [H2, H3] : [];
    cfg = yaml("e2e", H1, workers);
    const first = await tray(["up", cfg]);
    assert.equal(first.code, 0, first.stderr + first.stdout);
    t.diagnostic(`tray up, ${1 + workers.length} hosts from nothing: ${first.ms} ms (CLI process included)`);
    const again = await tray(["up", cfg]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /nothing changed/);
    t.diagnostic(`tray up, nothing changed: ${again.ms} ms (CLI process included)`);
    assert.ok(again.ms < 6000, `unchanged up took ${again.ms} ms`); // target < 2 s; room for a loaded box
    const st = await tray(["status", "--json"]);
    assert.equal(st.code, 0, st.stderr);
    const s = JSON.parse(st.stdout);
    assert.equal(s.nodes.length, 1 + workers.length);
    assert.ok(s.nodes.every((n: any) => n.alive));
    assert.deepEqual(s.nodes.map((n: any) => n.name).sort(), ["e2e-head", ...workers.map((_, i) => `e2e-worker-${i + 1}`)]);
    for (const i of [1, 2, 3].slice(0, 1 + workers.length)) {
      assert.equal(fs.readFileSync(path.join(th.homeOf(i, "tray"), "setup.txt"), "utf8"), `set up on tray-e${i}\n`);
      assert.equal(agentProcs(i).length > 0, true, `agent on host ${i}`);
    }
  });

  test("submit: a job whose tasks run on every node, through the SSH tunnel", async () => {
    const st = JSON.parse((await tray(["status", "--json"])).stdout);
    const r = await tray(["submit", path.join(tmp, "job.ts"), "--", "12", "300"]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const m = /NODES (\[.*\])/.exec(r.stdout);
    assert.ok(m, r.stdout);
    assert.deepEqual(JSON.parse(m![1]!), st.nodes.map((n: any) => n.nodeId).sort());
  });

  test("exec, rsync-up/down, get-head-ip, get-worker-ips", async () => {
    let r = await trayRemote(["exec", "hostname; id -un"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "tray-e1\ntray\n");
    r = await trayRemote(["exec", "echo bad >&2; exit 3"]);
    assert.equal(r.code, 3);
    assert.equal(r.stderr, "bad\n");
    const n = agentSupportsNodes() ? 3 : 1;
    r = await trayRemote(["exec", "--all-nodes", "hostname"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim().split("\n").length, n);
    assert.match(r.stdout, /^e2e-head\s+\| tray-e1$/m);

    const src = path.join(tmp, "up-dir");
    fs.mkdirSync(path.join(src, "sub"), { recursive: true });
    fs.writeFileSync(path.join(src, "a.txt"), "A");
    fs.writeFileSync(path.join(src, "sub/run.sh"), "#!/bin/sh\necho ran\n", { mode: 0o755 });
    r = await trayRemote(["rsync-up", src, "~/synced"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await trayRemote(["exec", "cat ~/synced/a.txt; ~/synced/sub/run.sh"])).stdout, "Aran\n");
    const back = path.join(tmp, "down-dir");
    r = await trayRemote(["rsync-down", "synced", back]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(fs.readFileSync(path.join(back, "a.txt"), "utf8"), "A");
    assert.equal(fs.statSync(path.join(back, "sub/run.sh")).mode & 0o777, 0o755);
    await trayRemote(["exec", "rm -rf ~/synced"]);
    // a single file to every node, into an existing directory (keeps its name)
    r = await trayRemote(["rsync-up", "--all-nodes", path.join(src, "a.txt"), "~"]);
    assert.equal(r.code, 0, r.stderr);
    r = await trayRemote(["exec", "--all-nodes", "cat ~/a.txt && rm ~/a.txt"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((r.stdout.match(/\| A$/gm) ?? []).length, n);

    // attach: a shell on the head with a terminal; its exit code comes back
    r = await trayRemote(["attach"], {}, "tty >/dev/null && echo has-a-tty $(hostname); exit 5\n");
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stdout, /has-a-tty tray-e1/);

    assert.equal((await trayRemote(["get-head-ip"])).stdout, `${H1}\n`);
    assert.equal((await trayRemote(["get-worker-ips"])).stdout, agentSupportsNodes() ? `${H2}\n${H3}\n` : "");
  });

  test("a host's network cut mid-job: the job still finishes on the others", async (t) => {
    if (!agentSupportsNodes()) return t.skip("needs worker nodes (agent --role node)");
    const child = spawn(process.execPath, [path.join(DIST, "cli.js"), "submit", path.join(tmp, "job.ts"), "--", "40", "500"], { env: { ...process.env, TRAY_HOME: path.join(tmp, "home"), TRAY_DIST: DIST } });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    for (let i = 0; i < 200 && !out.includes("started"); i++) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 700));
    th.cut(3);
    const code = await new Promise<number>((r) => child.on("exit", (c) => r(c ?? 1)));
    th.heal(3);
    assert.equal(code, 0, out);
    assert.match(out, /NODES \[/);
  });

  test("down: no agent process and no tray files on any host", async () => {
    const r = await tray(["down", cfg]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /is down/);
    console.log(`# tray down: ${r.ms} ms (CLI process included)`);
    for (const i of [1, 2, 3]) {
      for (let k = 0; k < 20 && agentProcs(i).length; k++) await new Promise((res) => setTimeout(res, 100));
      assert.deepEqual(agentProcs(i), [], `agent processes left on host ${i}`);
      const left = th.inHost(i, "find /home/tray/.tray 2>/dev/null | head -20").stdout;
      assert.equal(left, "", `tray files left on host ${i}`);
      assert.equal(th.inHost(i, "ls /dev/shm").stdout.trim(), "", `shared memory left on host ${i}`);
      assert.equal(th.inHost(i, "ls /tmp | grep '^tray-'").stdout.trim(), "", `sockets left on host ${i}`);
    }
    cfg = "";
  });

  test("bad hosts through the CLI: unreachable, changed host key", async () => {
    let r = await tray(["up", yaml("bad1", H1, [th.unusedAddress()])], { TRAY_SSH_TIMEOUT_MS: "1500" });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /tray: 1 of 2 hosts did not come up \(10\.77\.2\.250\); up: 10\.77\.2\.11\. Cannot reach 10\.77\.2\.250/);
    assert.doesNotMatch(r.stderr, /    at /, "no stack trace");
    await tray(["down", path.join(tmp, "bad1.yaml")]);
    const f = yaml("bad2", H2, []);
    r = await tray(["up", f]);
    assert.equal(r.code, 0, r.stderr);
    th.rekey(2);
    r = await tray(["up", f]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /The host key of 10\.77\.2\.12 has changed since tray first connected/);
    r = await tray(["down", f]);
    assert.equal(r.code, 1, "down refuses a changed key too");
    assert.match(r.stderr, /has changed since tray first connected/);
    th.killMatching(2, "agent.js");
    th.inHost(2, "rm -rf /home/tray/.tray");
    th.cleanTmp(2);
  });
});
