// The SSH layer (src/ssh) against real sshd hosts in network namespaces: exec, upload,
// host-key pinning, a changed key refused, and the one-sentence errors for wrong key, wrong
// user, unreachable and refused hosts. Run: node --test --import tsx test/e2e/ssh-layer.test.ts
import assert from "node:assert/strict";
import fs from "node:fs";
import { spawn, spawnSync } from "node:child_process";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { SshConnection } from "../../src/ssh/client.js";
import { connectNode, saveSshAuth } from "../../src/ssh/cluster.js";
import { TunnelSocket } from "../../src/client/tunnel.js";
import type { ClusterState } from "../../src/launcher/state.js";
import { TestHosts, testHostsUnavailable, type TestHost } from "../helpers/testhosts.js";

const skip = testHostsUnavailable();
const th = new TestHosts({ net: "10.77.0", bridge: "trbr0", nsPrefix: "tray-h", vethPrefix: "trv" });
let hosts: TestHost[] = [];
let trayHome = "";

describe("ssh layer against real sshd", { skip }, () => {
  before(() => {
    hosts = th.up(3);
    trayHome = fs.mkdtempSync(path.join(os.tmpdir(), "tray-home-"));
    process.env.TRAY_HOME = trayHome;
    delete process.env.SSH_AUTH_SOCK;
  });
  after(() => {
    th.down();
    fs.rmSync(trayHome, { recursive: true, force: true });
  });

  const connect = (i: number, user = "root", extra: Partial<Parameters<typeof SshConnection.connect>[0]> = {}) =>
    SshConnection.connect({ host: hosts[i]!.host, user, privateKeyPath: hosts[i]!.privateKeyPath, ...extra });

  test("exec: exit code, stdout, stderr, stdin; round trips are fast (setNoDelay)", async () => {
    const c = await connect(0);
    try {
      const r = await c.exec("echo out; echo err >&2; exit 7");
      assert.deepEqual([r.code, r.stdout, r.stderr], [7, "out\n", "err\n"]);
      assert.equal((await c.exec("cat", { stdin: "piped" })).stdout, "piped");
      assert.equal((await c.exec("hostname")).stdout.trim(), "tray-h1");
      const t = Date.now();
      for (let i = 0; i < 20; i++) await c.exec("true");
      const per = (Date.now() - t) / 20;
      // measured here: ~6 ms per exec with setNoDelay(true), ~38 ms without (Nagle + delayed ACK)
      assert.ok(per < 25, `an exec round trip took ${per} ms (Nagle not disabled?)`);
      await assert.rejects(c.run("exit 3", "the test step"), /the test step failed with exit code 3/);
    } finally {
      c.close();
    }
  });

  test("non-root user: own home, sftp upload with mode, download, directory listing", async () => {
    const c = await connect(1, "tray");
    try {
      assert.equal((await c.exec("id -un")).stdout.trim(), "tray");
      const home = await c.home();
      assert.equal(home, "/home/tray");
      await c.mkdirp(`${home}/d/e`);
      await c.upload(Buffer.from("secret"), `${home}/d/e/tok`, 0o600);
      const local = path.join(trayHome, "big.bin");
      fs.writeFileSync(local, Buffer.alloc(3 * 1024 * 1024, 7));
      await c.upload(local, `${home}/d/big.bin`, 0o755);
      assert.equal((await c.exec(`stat -c '%a %s' ${home}/d/e/tok ${home}/d/big.bin`)).stdout, "600 6\n755 3145728\n");
      // really on host 2's disk, not anywhere else
      assert.equal(fs.readFileSync(path.join(th.homeOf(2, "tray"), "d/e/tok"), "utf8"), "secret");
      assert.ok(!fs.existsSync(path.join(th.homeOf(1, "tray"), "d")));
      const back = path.join(trayHome, "back.bin");
      await c.download(`${home}/d/big.bin`, back);
      assert.equal(fs.statSync(back).size, 3 * 1024 * 1024);
      const ls = await c.readdir(`${home}/d`);
      assert.deepEqual(ls.map((e) => `${e.name}:${e.isDir}`).sort(), ["big.bin:false", "e:true"]);
      assert.equal(await c.stat(`${home}/nope`), undefined);
    } finally {
      c.close();
    }
  });

  test("host keys: first contact pins, same key accepted, changed key refused with a clear sentence", async () => {
    const state: ClusterState = { name: "keys", provider: "ssh", nodes: [], status: "up", updatedAt: "" };
    saveSshAuth("keys", { user: "root", privateKeyPath: hosts[2]!.privateKeyPath });
    const node = { name: "keys-worker-1", ssh: { host: hosts[2]!.host, port: 22, user: "root" } };
    // not pinned and not pinning (exec on an unknown host): refused
    await assert.rejects(connectNode(state, node), /^UserError: tray has no pinned host key for 10\.77\.0\.13 \(it presented SHA256:\S+\); run `tray up` first/);
    const c1 = await connectNode(state, node, { pin: true });
    c1.close();
    assert.equal(state.hostKeys?.[`${hosts[2]!.host}:22`], hosts[2]!.hostKey);
    const c2 = await connectNode(state, node);
    c2.close();
    th.rekey(3);
    hosts = th.hosts;
    await assert.rejects(connectNode(state, node), (e: Error) => {
      assert.equal(e.name, "UserError");
      assert.match(e.message, /^The host key of 10\.77\.0\.13 has changed since tray first connected \(was SHA256:\S+, now SHA256:\S+\)/);
      assert.match(e.message, /remove "10\.77\.0\.13:22" from hostKeys in .*state\.json/);
      return true;
    });
  });

  test("known_hosts file: listed key accepted, other key refused", async () => {
    const kh = path.join(trayHome, "known_hosts");
    fs.writeFileSync(kh, `# comment\n${hosts[0]!.host} ${hosts[0]!.hostKey}\n${hosts[1]!.host} ${hosts[2]!.hostKey}\n`);
    const ok = await connect(0, "root", { hostKeys: { knownHostsFile: kh } });
    ok.close();
    await assert.rejects(connect(1, "root", { hostKeys: { knownHostsFile: kh } }), /The host key of 10\.77\.0\.12 does not match .*known_hosts/);
  });

  test("wrong key, wrong user, unreachable and refused hosts: one sentence each", async () => {
    const wrongKey = path.join(trayHome, "wrong_ed25519");
    fs.copyFileSync(path.join(hosts[0]!.dir, "ssh_host_ed25519_key"), wrongKey);
    await assert.rejects(connect(0, "tray", { privateKeyPath: wrongKey }), (e: Error) => {
      assert.equal(e.name, "UserError");
      assert.equal(e.message, `10.77.0.11 refused to log in user "tray" with key ${wrongKey}: check auth.ssh_user and that this key's public half is in ~tray/.ssh/authorized_keys on the host.`);
      return true;
    });
    await assert.rejects(connect(0, "nobody-here"), /refused to log in user "nobody-here" with key .*id_ed25519/);
    const t = Date.now();
    await assert.rejects(SshConnection.connect({ host: th.unusedAddress(), user: "root", privateKeyPath: hosts[0]!.privateKeyPath, timeoutMs: 2000 }), (e: Error) => {
      assert.equal(e.name, "UserError");
      assert.match(e.message, /^Cannot reach 10\.77\.0\.250: (no SSH answer within 2 s|no route to the host)/);
      return true;
    });
    assert.ok(Date.now() - t < 6000);
    await assert.rejects(SshConnection.connect({ host: hosts[0]!.host, port: 2222, user: "root", privateKeyPath: hosts[0]!.privateKeyPath }), /^UserError: Cannot connect to 10\.77\.0\.11:2222: connection refused/);
    await assert.rejects(connect(0, "root", { privateKeyPath: "/nonexistent/key" }), /Cannot read the private key \/nonexistent\/key \(auth\.ssh_private_key\): no such file/);
    // cut network: a connection attempt times out with the same sentence
    th.cut(1);
    try {
      await assert.rejects(connect(0, "root", { timeoutMs: 1500 }), /^UserError: Cannot reach 10\.77\.0\.11: no SSH answer within 2 s/);
    } finally {
      th.heal(1);
    }
  });

  test("ssh-agent: a key held by the agent logs in without a key file; a passphrase-protected file says to use the agent", async () => {
    const dir = fs.mkdtempSync(path.join(trayHome, "agent-"));
    const sock = path.join(dir, "agent.sock");
    const agent = spawn("ssh-agent", ["-D", "-a", sock], { stdio: "ignore" });
    try {
      for (let i = 0; i < 50 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
      const env = { ...process.env, SSH_AUTH_SOCK: sock };
      assert.equal(spawnSync("ssh-add", [hosts[0]!.privateKeyPath], { env, encoding: "utf8" }).status, 0);
      process.env.SSH_AUTH_SOCK = sock;
      const c = await SshConnection.connect({ host: hosts[0]!.host, user: "tray" });
      assert.equal((await c.exec("id -un")).stdout, "tray\n");
      c.close();
      // an encrypted key file is read locally; with the agent holding the key, login still works
      const enc = path.join(dir, "enc_ed25519");
      fs.copyFileSync(hosts[0]!.privateKeyPath, enc);
      fs.chmodSync(enc, 0o600);
      assert.equal(spawnSync("ssh-keygen", ["-p", "-q", "-N", "pass phrase", "-P", "", "-f", enc]).status, 0);
      const c2 = await connect(0, "tray", { privateKeyPath: enc });
      c2.close();
      delete process.env.SSH_AUTH_SOCK;
      await assert.rejects(connect(0, "tray", { privateKeyPath: enc }), /is protected by a passphrase; load it into ssh-agent \(ssh-add /);
    } finally {
      delete process.env.SSH_AUTH_SOCK;
      agent.kill();
    }
  });

  test("forwardOut tunnel reaches a port on the host's own address", async () => {
    const h = hosts[0]!;
    const script = `require("http").createServer((q,s)=>s.end("from "+require("os").hostname())).listen(8765,"${h.host}")`;
    const bg = th.inHost(1, `nohup node -e '${script}' >/dev/null 2>&1 & echo $!`);
    const serverPid = Number(bg.stdout.trim());
    try {
      const c = await connect(0);
      try {
        let body = "";
        for (let tries = 0; tries < 50 && !body; tries++) {
          body = await new Promise<string>((resolve) => {
            const req = http.request({ host: h.host, port: 8765, path: "/", createConnection: () => new TunnelSocket(c.forwardOut(h.host, 8765), h.host, 8765) as any }, (res) => {
              let b = "";
              res.on("data", (d) => (b += d));
              res.on("end", () => resolve(b));
            });
            req.on("error", () => setTimeout(() => resolve(""), 100));
            req.end();
          });
        }
        assert.equal(body, "from tray-h1");
      } finally {
        c.close();
      }
    } finally {
      try { process.kill(serverPid, "SIGKILL"); } catch { /* gone */ }
    }
  });

  test("PTY shell follows the window size", async () => {
    const c = await connect(0, "tray");
    try {
      const ch = await c.shell({ rows: 30, cols: 100 });
      let out = "";
      ch.on("data", (d: Buffer) => (out += d.toString()));
      const waitFor = async (re: RegExp) => {
        for (let i = 0; i < 100 && !re.test(out); i++) await new Promise((r) => setTimeout(r, 50));
        assert.match(out, re);
      };
      ch.write("stty size\n");
      await waitFor(/30 100/);
      ch.setWindow(40, 120, 0, 0);
      await new Promise((r) => setTimeout(r, 100));
      const exited = new Promise<number>((r) => ch.on("exit", (code: number) => r(code)));
      ch.write("stty size; exit 4\n");
      await waitFor(/40 120/);
      assert.equal(await exited, 4);
    } finally {
      c.close();
    }
  });
});
