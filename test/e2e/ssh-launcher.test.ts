// The SSH launcher (src/launcher/remote.ts) on 3 real sshd hosts, logging in as the non-root
// user: bootstrap from nothing, an unchanged second `up` that restarts nothing, per-step
// caching of setup commands, --no-restart / --restart-only, a failing setup command, a full
// disk, an unreachable host, a changed host key, the cluster lock, and `down` leaving nothing.
//
// The agent here is a stand-in (a few lines of plain Node written below) that speaks the
// launcher's side of the contract: the command line of docs/contracts.md, the ready file, the
// token file, workers dialling the head at its private address over the bridge, and a
// "nodes" view read through the SSH tunnel. So this file tests the launcher whatever the
// state of the real agent; test/e2e/ssh-cluster.test.ts runs the real one end to end.
// Run: node --test --import tsx test/e2e/ssh-launcher.test.ts
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import type { Duplex } from "node:stream";
import { after, before, describe, test } from "node:test";
import { loadClusterConfig } from "../../src/config/index.js";
import { downRemote, upRemote, type HeadConnector, type UpRemoteOptions } from "../../src/launcher/remote.js";
import { silentProgress } from "../../src/launcher/progress.js";
import { readState } from "../../src/launcher/state.js";
import { createProvider } from "../../src/providers/ssh/index.js";
import { TestHosts, testHostsUnavailable, type TestHost } from "../helpers/testhosts.js";

const skip = testHostsUnavailable();
const th = new TestHosts({ net: "10.77.1", bridge: "trbr2", nsPrefix: "tray-k", vethPrefix: "trk" });
let hosts: TestHost[] = [];
let tmp = "";
let dist = "";

const STUB_AGENT = String.raw`
import http from "node:http";
import fs from "node:fs";
import crypto from "node:crypto";
const a = {};
const argv = process.argv.slice(3);
for (let i = 0; i < argv.length; i += 2) a[argv[i].slice(2)] = argv[i + 1];
const token = fs.readFileSync(a["token-file"], "utf8").trim();
const i = a.listen.lastIndexOf(":");
const host = a.listen.slice(0, i), port = Number(a.listen.slice(i + 1));
const nodeId = crypto.randomBytes(6).toString("hex");
const nodes = new Map();
// like the real agent: a socket in $TMPDIR and an object store in /dev/shm, which this one
// never cleans up (as if killed): down must remove them
const short = crypto.randomBytes(4).toString("hex");
fs.writeFileSync((process.env.TMPDIR || "/tmp") + "/tray-" + process.pid + "-" + short + ".sock", "");
fs.mkdirSync("/dev/shm/tray-" + a.cluster + "-" + short, { recursive: true });
fs.writeFileSync("/dev/shm/tray-" + a.cluster + "-" + short + "/obj", "x");
const server = http.createServer((req, res) => {
  if (req.headers.authorization !== "Bearer " + token) { res.writeHead(401); return res.end(); }
  const u = new URL(req.url, "http://x");
  if (u.pathname === "/join") { nodes.set(u.searchParams.get("name"), { name: u.searchParams.get("name"), nodeId: u.searchParams.get("id"), ts: Date.now() }); return res.end("ok"); }
  if (u.pathname === "/nodes") return res.end(JSON.stringify([...nodes.values()].map((n) => ({ ...n, alive: Date.now() - n.ts < 3000 }))));
  res.writeHead(404); res.end();
});
server.listen(port, host, () => {
  const listen = host + ":" + server.address().port;
  const self = { name: a["node-name"], nodeId, ts: Date.now() };
  if (a.role === "head") setInterval(() => nodes.set(self.name, { ...self, ts: Date.now() }), 500), nodes.set(self.name, self);
  else {
    const h = new URL(a.head.replace("ws:", "http:"));
    const join = () => http.get({ host: h.hostname, port: h.port, path: "/join?name=" + encodeURIComponent(a["node-name"]) + "&id=" + nodeId, headers: { authorization: "Bearer " + token } }, (r) => r.resume()).on("error", () => {});
    join(); setInterval(join, 500);
  }
  fs.writeFileSync(a["ready-file"] + ".tmp", JSON.stringify({ pid: process.pid, nodeId, listen }));
  fs.renameSync(a["ready-file"] + ".tmp", a["ready-file"]);
  console.log("stub agent ready", JSON.stringify(process.argv.slice(2)));
});
process.on("SIGTERM", () => { console.log("stub agent stopping"); process.exit(0); });
`;

/** The head view over the SSH tunnel: GET /nodes with the cluster token. */
const stubConnector: HeadConnector = async ({ url, token, createConnection }) => {
  const u = new URL(url);
  return {
    nodes: () =>
      new Promise((resolve, reject) => {
        const req = http.request({ host: u.hostname, port: u.port, path: "/nodes", headers: { authorization: `Bearer ${token}` }, createConnection: createConnection as () => Duplex as any }, (res) => {
          let b = "";
          res.on("data", (d) => (b += d));
          res.on("end", () => (res.statusCode === 200 ? resolve(JSON.parse(b)) : reject(new Error(`HTTP ${res.statusCode}`))));
        });
        req.on("error", reject);
        req.end();
      }),
    close: () => {},
  };
};

function writeConfig(name: string, body: { user?: string; head: string; workers: string[]; setup?: string[]; workerSetup?: string[]; extra?: string }): string {
  const file = path.join(tmp, `${name}.yaml`);
  const list = (xs: string[] = []) => (xs.length ? "\n" + xs.map((x) => `  - ${JSON.stringify(x)}`).join("\n") : " []");
  fs.writeFileSync(
    file,
    `cluster_name: ${name}
provider:
  type: ssh
  head_ip: ${body.head}
  worker_ips:${list(body.workers)}
auth:
  ssh_user: ${body.user ?? "tray"}
  ssh_private_key: ${hosts[0]!.privateKeyPath}
file_mounts:
  "~/mounted": ${JSON.stringify(path.join(tmp, "mount"))}
setup_commands:${list(body.setup)}
worker_setup_commands:${list(body.workerSetup)}
${body.extra ?? ""}`,
  );
  return file;
}

const opts = (o: Partial<UpRemoteOptions> = {}): UpRemoteOptions => ({ distDir: dist, headConnector: stubConnector, joinTimeoutMs: 15_000, ...o });

async function up(file: string, o: Partial<UpRemoteOptions> = {}) {
  const config = loadClusterConfig(file);
  return upRemote(config, createProvider(config), opts({ configPath: file, ...o }), silentProgress());
}

async function down(file: string, workersOnly = false) {
  const config = loadClusterConfig(file);
  return downRemote(config, createProvider(config), { workersOnly }, silentProgress());
}

/** pid of the stub agent of `cluster` on host i (from its pid file), if running. */
function agentPid(i: number, cluster: string, user = "tray"): number | undefined {
  try {
    const pid = Number(fs.readFileSync(path.join(th.homeOf(i, user), `.tray/nodes/${cluster}/agent.pid`), "utf8"));
    if (!(pid > 0)) return undefined; // written but still empty: kill(0) would be our own process group
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}

function agentProcesses(i: number): string[] {
  return th.processes(i).filter((c) => c.includes("agent.js"));
}

describe("ssh launcher on 3 hosts (stand-in agent)", { skip }, () => {
  before(() => {
    hosts = th.up(3);
    // hosts keep their /tmp between runs: start from a clean one, so leftovers are this run's
    for (const i of [1, 2, 3]) th.cleanTmp(i);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tray-launcher-"));
    process.env.TRAY_HOME = path.join(tmp, "home");
    delete process.env.SSH_AUTH_SOCK;
    dist = path.join(tmp, "dist");
    fs.mkdirSync(dist);
    fs.writeFileSync(path.join(dist, "agent.js"), STUB_AGENT);
    fs.writeFileSync(path.join(dist, "better_sqlite3.node"), Buffer.alloc(4096, 1));
    fs.mkdirSync(path.join(tmp, "mount/sub"), { recursive: true });
    fs.writeFileSync(path.join(tmp, "mount/a.txt"), "A");
    fs.writeFileSync(path.join(tmp, "mount/sub/b.sh"), "#!/bin/sh\necho B\n", { mode: 0o755 });
  });
  after(() => {
    th.down();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const [H1, H2, H3] = ["10.77.1.11", "10.77.1.12", "10.77.1.13"];
  let file = "";

  test("up from nothing as a non-root user: every host bootstrapped and joined", async () => {
    file = writeConfig("c1", { head: H1, workers: [H2, H3], setup: ["echo one > ~/setup1"], workerSetup: ["echo w > ~/wsetup"] });
    const t = Date.now();
    const r = await up(file);
    const ms = Date.now() - t;
    console.log(`# up from nothing, 3 hosts: ${ms} ms`);
    assert.deepEqual(r.hosts.map((h) => [h.name, h.status]), [["c1-head", "joined"], ["c1-worker-1", "joined"], ["c1-worker-2", "joined"]]);
    assert.ok(ms < 10_000, `up took ${ms} ms`); // target < 10 s (about 1 s here)
    for (const i of [1, 2, 3]) {
      const home = th.homeOf(i, "tray");
      assert.equal(fs.readFileSync(path.join(home, "setup1"), "utf8"), "one\n");
      assert.equal(fs.existsSync(path.join(home, "wsetup")), i !== 1, "worker_setup_commands only on workers");
      assert.equal(fs.readFileSync(path.join(home, "mounted/a.txt"), "utf8"), "A");
      assert.equal(fs.statSync(path.join(home, "mounted/sub/b.sh")).mode & 0o777, 0o755);
      const tokenFile = path.join(home, ".tray/nodes/c1/token");
      assert.equal(fs.statSync(tokenFile).mode & 0o777, 0o600);
      assert.equal(fs.statSync(tokenFile).uid, Number(th.inHost(i, "id -u tray").stdout.trim()));
      assert.ok(agentPid(i, "c1"), `agent running on host ${i}`);
      const cmd = agentProcesses(i).join("\n");
      assert.match(cmd, /agent\.js agent --role (head|node) --cluster c1 --state-dir \/home\/tray\/\.tray\/nodes\/c1/);
      if (i > 1) assert.match(cmd, /--head ws:\/\/10\.77\.1\.11:\d+/);
      // the private key never left this machine
      assert.equal(th.inHost(i, "grep -rl 'PRIVATE KEY' /home/tray /root 2>/dev/null").stdout, "");
    }
    const st = readState("c1")!;
    assert.equal(st.status, "up");
    assert.equal(Object.keys(st.hostKeys ?? {}).length, 3);
    assert.equal(st.hostKeys![`${H2}:22`], hosts[1]!.hostKey);
  });

  test("second up with nothing changed restarts nothing and is fast", async () => {
    const before = [1, 2, 3].map((i) => agentPid(i, "c1"));
    const t = Date.now();
    const r = await up(file);
    const ms = Date.now() - t;
    console.log(`# up with nothing changed, 3 hosts: ${ms} ms`);
    assert.deepEqual(r.hosts.map((h) => [h.status, h.ran.length]), [["unchanged", 0], ["unchanged", 0], ["unchanged", 0]]);
    assert.deepEqual([1, 2, 3].map((i) => agentPid(i, "c1")), before);
    // target < 2 s (about 0.3 s on an idle machine); the bound leaves room for a loaded CI box
    assert.ok(ms < 5000, `unchanged up took ${ms} ms`);
  });

  test("a changed worker setup command re-runs only that step on the workers", async () => {
    const before = [1, 2, 3].map((i) => agentPid(i, "c1"));
    file = writeConfig("c1", { head: H1, workers: [H2, H3], setup: ["echo one > ~/setup1"], workerSetup: ["echo w2 > ~/wsetup"] });
    fs.writeFileSync(path.join(th.homeOf(2, "tray"), "setup1"), "untouched");
    const r = await up(file);
    assert.deepEqual(r.hosts.map((h) => h.ran), [[], ["setup:1", "start"], ["setup:1", "start"]]);
    assert.equal(fs.readFileSync(path.join(th.homeOf(2, "tray"), "wsetup"), "utf8"), "w2\n");
    assert.equal(fs.readFileSync(path.join(th.homeOf(2, "tray"), "setup1"), "utf8"), "untouched", "setup:0 did not run again");
    const now = [1, 2, 3].map((i) => agentPid(i, "c1"));
    assert.equal(now[0], before[0], "head not restarted");
    assert.notEqual(now[1], before[1]);
  });

  test("--no-restart runs changed setup without restarting; --restart-only restarts without setup", async () => {
    const before = [1, 2, 3].map((i) => agentPid(i, "c1"));
    file = writeConfig("c1", { head: H1, workers: [H2, H3], setup: ["echo two > ~/setup1"], workerSetup: ["echo w2 > ~/wsetup"] });
    let r = await up(file, { noRestart: true });
    assert.deepEqual(r.hosts.map((h) => h.ran.filter((s) => s === "start")), [[], [], []]);
    assert.deepEqual([1, 2, 3].map((i) => agentPid(i, "c1")), before);
    assert.equal(fs.readFileSync(path.join(th.homeOf(1, "tray"), "setup1"), "utf8"), "two\n");
    r = await up(file, { restartOnly: true });
    assert.deepEqual(r.hosts.map((h) => h.ran), [["start"], ["start"], ["start"]]);
    const now = [1, 2, 3].map((i) => agentPid(i, "c1"));
    for (let i = 0; i < 3; i++) assert.notEqual(now[i], before[i]);
    // the skipped restart of --no-restart is still owed: a plain up now has nothing to do
    r = await up(file);
    assert.deepEqual(r.hosts.map((h) => h.ran), [[], [], []]);
  });

  test("the cluster lock: a second up while one runs is refused with a sentence naming the holder", async () => {
    const first = up(file);
    await new Promise((r) => setTimeout(r, 50));
    await assert.rejects(up(file), /Cluster "c1" is busy: `tray up` \(pid \d+\) has held its lock since/);
    await first;
  });

  test("a failing setup command: its output and exit code, the other hosts up; a rerun continues", async () => {
    file = writeConfig("c1", { head: H1, workers: [H2, H3], setup: ["echo two > ~/setup1"], workerSetup: ["echo w2 > ~/wsetup", "if [ $(hostname) = tray-k3 ]; then echo 'E: package nope not found' >&2; exit 100; fi; echo fine"] });
    await assert.rejects(up(file), (e: Error) => {
      assert.equal(e.name, "UserError");
      assert.match(e.message, /^1 of 3 hosts did not come up \(10\.77\.1\.13\); up: 10\.77\.1\.11, 10\.77\.1\.12\. 10\.77\.1\.13: setup 3\/3 command `if .*` failed with exit code 100; its output \(all of it in .*\/clusters\/c1\/logs\/c1-worker-2\.log\):\n {4}E: package nope not found/);
      assert.match(fs.readFileSync(path.join(process.env.TRAY_HOME!, "clusters/c1/logs/c1-worker-2.log"), "utf8"), /setup 3\/3: \$ if .*\nE: package nope not found\n\[exit 100\]/);
      return true;
    });
    assert.equal(readState("c1")!.status, "failed");
    file = writeConfig("c1", { head: H1, workers: [H2, H3], setup: ["echo two > ~/setup1"], workerSetup: ["echo w2 > ~/wsetup", "echo fixed"] });
    const r = await up(file);
    assert.deepEqual(r.hosts.map((h) => [h.status, h.ran]), [["unchanged", []], ["joined", ["setup:2", "start"]], ["joined", ["setup:2", "start"]]]);
  });

  test("an unreachable host and a host with a changed key: named, the rest comes up", async () => {
    const f2 = writeConfig("c2", { user: "root", head: H1, workers: [H2, th.unusedAddress()] });
    process.env.TRAY_SSH_TIMEOUT_MS = "2000";
    try {
      await assert.rejects(up(f2), /^UserError: 1 of 3 hosts did not come up \(10\.77\.1\.250\); up: 10\.77\.1\.11, 10\.77\.1\.12\. Cannot reach 10\.77\.1\.250: (no SSH answer within 2 s|no route)/);
    } finally {
      delete process.env.TRAY_SSH_TIMEOUT_MS;
    }
    assert.ok(agentPid(1, "c2", "root") && agentPid(2, "c2", "root"));
    // host 2 reinstalled: its new key is refused on the next up
    th.rekey(2);
    const f3 = writeConfig("c2", { user: "root", head: H1, workers: [H2] });
    await assert.rejects(up(f3), (e: Error) => {
      assert.match(e.message, /^1 of 2 hosts did not come up \(10\.77\.1\.12\); up: 10\.77\.1\.11\. The host key of 10\.77\.1\.12 has changed since tray first connected/);
      return true;
    });
    // forget the pin (as the message says) and the cluster comes up; the 3rd host is released
    for (const c of ["c1", "c2"]) {
      const st = readState(c)!;
      delete st.hostKeys![`${H2}:22`];
      fs.writeFileSync(path.join(process.env.TRAY_HOME!, `clusters/${c}/state.json`), JSON.stringify(st));
    }
    const r = await up(f3);
    assert.deepEqual(r.hosts.map((h) => h.status), ["unchanged", "unchanged"]);
    assert.equal(readState("c2")!.nodes.length, 2, "the host removed from the YAML left the cluster");
    await down(f3);
    assert.equal(agentPid(1, "c2", "root"), undefined);
  });

  test("a host whose network is cut during up: named, with what it was doing", async () => {
    const f6 = writeConfig("c6", { user: "root", head: H1, workers: [H3], setup: ["sleep 4"] });
    process.env.TRAY_SSH_KEEPALIVE_MS = "500";
    const cut = setTimeout(() => th.cut(3), 1000);
    try {
      const t = Date.now();
      await assert.rejects(up(f6), /^UserError: 1 of 2 hosts did not come up \(10\.77\.1\.13\); up: 10\.77\.1\.11\. Lost the SSH connection to 10\.77\.1\.13 while running `sleep 4`/);
      assert.ok(Date.now() - t < 8000);
    } finally {
      clearTimeout(cut);
      delete process.env.TRAY_SSH_KEEPALIVE_MS;
      th.heal(3);
    }
    // healed: the rerun finishes host 3 (the head is not redone)
    const r = await up(f6);
    assert.deepEqual(r.hosts.map((h) => [h.status, h.ran.includes("setup:0")]), [["unchanged", false], ["joined", true]]);
    await down(f6);
  });

  test("a worker that cannot reach the head (firewall): named once the join wait ends", async () => {
    assert.equal(th.inHost(2, `ip route add blackhole ${H1}/32`).code, 0);
    try {
      const f7 = writeConfig("c7", { user: "root", head: H1, workers: [H2] });
      await assert.rejects(up(f7, { joinTimeoutMs: 3000 }), /^UserError: 1 of 2 hosts did not come up \(10\.77\.1\.12\); up: 10\.77\.1\.11\. The agents of c7-worker-1 started but did not join the head within 3 s; see ~\/\.tray\/nodes\/c7\/agent\.log on that host\./);
    } finally {
      th.inHost(2, `ip route del blackhole ${H1}/32`);
    }
    const r = await up(writeConfig("c7", { user: "root", head: H1, workers: [H2] }));
    assert.deepEqual(r.hosts.map((h) => h.status), ["unchanged", "unchanged"], "the worker's agent kept trying and joined once the route was back");
    await down(writeConfig("c7", { user: "root", head: H1, workers: [H2] }));
  });

  test("a host without enough disk: a clear sentence before uploading", async () => {
    assert.equal(th.inHost(3, "mkdir -p /root/.tray && mount -t tmpfs -o size=256k tmpfs /root/.tray").code, 0);
    try {
      const f4 = writeConfig("c4", { user: "root", head: H3, workers: [] });
      await assert.rejects(up(f4), /10\.77\.1\.13 has only 0 MiB free in \/root\/\.tray; the agent needs about \d+ MiB: free some space on the host\./);
    } finally {
      th.inHost(3, "umount /root/.tray; rmdir /root/.tray");
    }
  });

  test("a host without a usable node gets ours (no internet needed)", async () => {
    // host 3 only: its `node` is a v18 (wrong ABI) in its own mount namespace
    const fake = path.join(th.base, "node18"); // visible inside the host (its /tmp is its own)
    fs.writeFileSync(fake, "#!/bin/sh\necho '18.19.0 108'\n", { mode: 0o755 });
    assert.equal(th.inHost(3, `mount --bind ${fake} /usr/bin/node`).code, 0);
    try {
      const f5 = writeConfig("c5", { user: "root", head: H3, workers: [] });
      const t = Date.now();
      const r = await up(f5);
      console.log(`# up with a node binary upload (${Math.round(fs.statSync(process.execPath).size / 1048576)} MiB): ${Date.now() - t} ms`);
      assert.deepEqual(r.hosts.map((h) => h.status), ["joined"]);
      const ours = path.join(th.homeOf(3, "root"), ".tray/node/bin/node");
      assert.equal(fs.statSync(ours).size, fs.statSync(process.execPath).size);
      assert.match(agentProcesses(3).join("\n"), /^\/root\/\.tray\/node\/bin\/node \/root\/\.tray\/agent\/\w+\/agent\.js agent --role head --cluster c5/m);
      // unchanged: not uploaded again
      assert.deepEqual((await up(f5)).hosts.map((h) => h.ran), [[]]);
      await down(f5);
      assert.equal(fs.existsSync(path.join(th.homeOf(3, "root"), ".tray")), false);
    } finally {
      th.inHost(3, "umount /usr/bin/node");
    }
  });

  test("down --workers-only, then down: no agent process and no tray files left", async () => {
    await up(file); // pins host 2's new key for c1 (its pin was dropped above)
    let r = await down(file, true);
    assert.deepEqual(r.hosts.map((h) => h.status).sort(), ["removed", "removed"]);
    assert.ok(agentPid(1, "c1"));
    assert.equal(agentPid(2, "c1"), undefined);
    const t = Date.now();
    r = await down(file);
    console.log(`# down: ${Date.now() - t} ms`);
    for (const i of [1, 2, 3]) {
      assert.deepEqual(agentProcesses(i), [], `no agent left on host ${i}`);
      assert.equal(th.inHost(i, "ls /dev/shm; ls /tmp | grep '^tray-'").stdout, "", `no store or socket left on host ${i}`);
      for (const u of ["tray", "root"]) assert.equal(fs.existsSync(path.join(th.homeOf(i, u), ".tray")), false, `no ~/.tray for ${u} on host ${i}`);
    }
    assert.equal(readState("c1")!.status, "down");
  });
});
