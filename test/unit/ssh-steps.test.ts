// Step hashing and the decisions of `tray up` on SSH hosts (what runs, what restarts).
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { hostNodeUsable, mountsManifest, parseProbe, portOf, stepHashes, stepsToRun, unameToArch, type StepInputs } from "../../src/launcher/remote.js";
import { parseHostPort, SshProvider } from "../../src/providers/ssh/index.js";

const base: StepInputs = { initialization: ["i"], mounts: "m", setup: ["a", "b", "c"], agent: "ag", token: "t", start: "node agent.js --role head" };

test("step hashes are stable and chained through setup commands", () => {
  const h = stepHashes(base);
  assert.deepEqual(Object.keys(h), ["init", "mounts", "setup:0", "setup:1", "setup:2", "agent", "token", "start"]);
  assert.deepEqual(stepHashes({ ...base }), h);
  const changed = stepHashes({ ...base, setup: ["a", "B", "c"] });
  assert.equal(changed["setup:0"], h["setup:0"]);
  assert.notEqual(changed["setup:1"], h["setup:1"]);
  assert.notEqual(changed["setup:2"], h["setup:2"], "later commands depend on earlier ones");
  assert.equal(changed.agent, h.agent);
  assert.notEqual(changed.start, h.start, "any change restarts the agent");
  assert.notEqual(stepHashes({ ...base, token: "u" }).start, h.start);
});

test("stepsToRun: nothing when unchanged and alive; only what changed; restart rules", () => {
  const want = stepHashes(base);
  assert.deepEqual(stepsToRun(want, want, { agentAlive: true }), []);
  assert.deepEqual(stepsToRun(want, want, { agentAlive: false }), ["start"], "a dead agent is started");
  assert.deepEqual(stepsToRun(want, undefined, { agentAlive: false }), ["init", "mounts", "setup:0", "setup:1", "setup:2", "agent", "token", "start"]);
  const next = stepHashes({ ...base, setup: ["a", "b", "C"] });
  assert.deepEqual(stepsToRun(next, want, { agentAlive: true }), ["setup:2", "start"]);
  assert.deepEqual(stepsToRun(next, want, { agentAlive: true, noRestart: true }), ["setup:2"]);
  assert.deepEqual(stepsToRun(want, want, { agentAlive: true, restartOnly: true }), ["start"]);
  assert.deepEqual(stepsToRun(next, want, { agentAlive: true, restartOnly: true }), ["start"], "--restart-only skips setup");
  const newAgent = stepHashes({ ...base, agent: "ag2" });
  assert.deepEqual(stepsToRun(newAgent, want, { agentAlive: true, restartOnly: true }), ["agent", "start"], "a new agent bundle is still uploaded");
});

test("mounts manifest changes with content metadata", () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "tray-mm-"));
  fs.writeFileSync(path.join(d, "a"), "1");
  const m1 = mountsManifest({ "~/x": d });
  assert.equal(mountsManifest({ "~/x": d }), m1);
  fs.writeFileSync(path.join(d, "b"), "2");
  assert.notEqual(mountsManifest({ "~/x": d }), m1);
  assert.match(mountsManifest({ "~/y": path.join(d, "nope") }), /missing ~\/y/);
  fs.rmSync(d, { recursive: true });
});

test("probe parsing and node compatibility", () => {
  const p = parseProbe("home=/home/u\nhostname=h1\narch=x86_64\nnodepath=/usr/bin/node\nnode=20.11.0 115\ndf=123456\nalive=42\nready={\"pid\":42,\"listen\":\"10.0.0.1:40123\"}\n");
  assert.deepEqual(p, { home: "/home/u", arch: "x86_64", nodePath: "/usr/bin/node", nodeVersion: "20.11.0", nodeAbi: "115", freeKiB: 123456, agentPid: 42, ready: { pid: 42, listen: "10.0.0.1:40123" }, hostname: "h1" });
  assert.equal(portOf(p.ready?.listen), 40123);
  assert.equal(parseProbe("home=/root\n").agentPid, undefined);
  assert.equal(hostNodeUsable({ nodeVersion: "20.11.0", nodeAbi: "115" }, "115"), true);
  assert.equal(hostNodeUsable({ nodeVersion: "22.1.0", nodeAbi: "127" }, "115"), false, "another ABI cannot load our native addon");
  assert.equal(hostNodeUsable({ nodeVersion: "18.19.0", nodeAbi: "108" }, "108"), false);
  assert.equal(hostNodeUsable({}, "115"), false);
  assert.equal(unameToArch("aarch64"), "arm64");
  assert.equal(unameToArch("x86_64"), "x64");
});

test("ssh provider: hosts handed out once, queried by cluster, head and workers from their lists", async () => {
  assert.deepEqual(parseHostPort("10.0.0.1"), { host: "10.0.0.1", port: 22 });
  assert.deepEqual(parseHostPort("10.0.0.1:2222"), { host: "10.0.0.1", port: 2222 });
  assert.deepEqual(parseHostPort("[fe80::1]:2200"), { host: "fe80::1", port: 2200 });
  const p = new SshProvider({ clusterName: "c", headIp: "10.0.0.1", workerIps: ["10.0.0.2", "10.0.0.3:2222"], user: "ubuntu" });
  assert.deepEqual(p.capabilities, { stop: false, creates: false, ssh: true });
  await p.bootstrap();
  const [head] = await p.runInstances([{ clusterName: "c", nodeType: "head", kind: "head", count: 1, nodeConfig: {}, names: ["c-head"], tags: {} }]);
  assert.deepEqual(head!.ssh, { host: "10.0.0.1", port: 22, user: "ubuntu" });
  const ws = await p.runInstances([{ clusterName: "c", nodeType: "worker", kind: "worker", count: 2, nodeConfig: {}, names: ["c-worker-1", "c-worker-2"], tags: {} }]);
  assert.deepEqual(ws.map((w) => [w.name, w.privateIp, w.ssh!.port]), [["c-worker-1", "10.0.0.2", 22], ["c-worker-2", "10.0.0.3", 2222]]);
  await assert.rejects(p.runInstances([{ clusterName: "c", nodeType: "worker", kind: "worker", count: 1, nodeConfig: {}, names: ["c-worker-3"], tags: {} }]), /has 0 free worker host\(s\) but 1 were asked for/);
  assert.equal((await p.queryInstances({ clusterName: "c" })).length, 3);
  assert.equal((await p.queryInstances({ clusterName: "other" })).length, 0);
  assert.deepEqual(await p.terminateInstances([ws[0]!.id]), []);
  assert.deepEqual((await p.queryInstances({ clusterName: "c", kind: "worker" })).map((r) => r.name), ["c-worker-2"]);
  await assert.rejects(new SshProvider({ clusterName: "c", headIp: "10.0.0.1", workerIps: ["10.0.0.1"], user: "u" }).bootstrap(), /listed twice/);
});

test("scripts survive any quoting: sh() and userScript() run exactly the text given", async () => {
  const { sh, userScript } = await import("../../src/launcher/remote.js");
  const { spawnSync } = await import("node:child_process");
  const cmd = `printf '%s|' "it's" 'a "b"' $((1+2)) "$HOME" '\\n'`;
  const direct = spawnSync("sh", ["-c", cmd], { encoding: "utf8" }).stdout;
  assert.equal(spawnSync("sh", ["-c", sh(cmd)], { encoding: "utf8" }).stdout, direct);
  assert.throws(() => sh("a\nb"), /one line/);
  // a setup command of several lines, fed to `sh -s` as the launcher does; its stdin is empty
  const multi = `${cmd}\necho second line; cat`;
  assert.equal(spawnSync("sh", ["-s"], { input: userScript(multi) + "\necho NOT-RUN\n", encoding: "utf8" }).stdout, `${direct}second line\n`);
  assert.equal(spawnSync("sh", ["-s"], { input: userScript("exit 7") }).status, 7);
});

test("ssh provider from the YAML: hosts of an earlier up are found again; a host removed from the YAML is released", async () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "tray-prov-"));
  const old = process.env.TRAY_HOME;
  process.env.TRAY_HOME = home;
  try {
    const { writeState } = await import("../../src/launcher/state.js");
    const { createProvider } = await import("../../src/providers/ssh/index.js");
    writeState({
      name: "c", provider: "ssh", status: "up", updatedAt: "",
      nodes: [
        { name: "c-head", kind: "head", nodeType: "head", id: "10.0.0.1", privateIp: "10.0.0.1", ssh: { host: "10.0.0.1", port: 22, user: "u" } },
        { name: "c-worker-1", kind: "worker", nodeType: "worker", id: "10.0.0.2", privateIp: "10.0.0.2", ssh: { host: "10.0.0.2", port: 22, user: "u" } },
        { name: "c-worker-2", kind: "worker", nodeType: "worker", id: "10.0.0.3", privateIp: "10.0.0.3", ssh: { host: "10.0.0.3", port: 22, user: "u" } },
      ],
    });
    const p = createProvider({ cluster_name: "c", provider: { type: "ssh", head_ip: "10.0.0.1", worker_ips: ["10.0.0.2", "10.0.0.4"] } as any, auth: { ssh_user: "u" } });
    assert.deepEqual((await p.queryInstances({ clusterName: "c" })).map((r) => r.name), ["c-head", "c-worker-1"]);
    const [w] = await p.runInstances([{ clusterName: "c", nodeType: "worker", kind: "worker", count: 1, nodeConfig: {}, names: ["c-worker-2"], tags: {} }]);
    assert.equal(w!.id, "10.0.0.4");
    assert.throws(() => createProvider({ cluster_name: "c", provider: { type: "ssh" }, auth: { ssh_user: "u" } }), /provider\.head_ip is required/);
  } finally {
    if (old === undefined) delete process.env.TRAY_HOME;
    else process.env.TRAY_HOME = old;
    fs.rmSync(home, { recursive: true, force: true });
  }
});
