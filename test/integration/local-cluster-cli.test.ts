// The CLI around a local cluster: up twice, exec/rsync on "the head" (this machine), status
// with worker node agents, down --workers-only, down twice.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { localClusterYaml, TestCluster } from "../helpers/cluster.js";
import { pidAlive } from "../../src/launcher/state.js";

const yaml = localClusterYaml("localcli", { workers: { worker: { resources: { CPU: 1 }, count: 2 } } });
const c = new TestCluster("localcli", yaml);
before(() => c.up());
after(() => c.down());

test("up twice is harmless and changes nothing", async () => {
  const before = c.state().nodes.map((n: any) => n.pid).sort();
  const r = await c.cli(["up", c.configPath]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /nothing changed/);
  assert.deepEqual(c.state().nodes.map((n: any) => n.pid).sort(), before);
});

test("status lists the head and both worker node agents", async () => {
  const r = await c.cli(["status", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  assert.deepEqual(s.nodes.map((n: any) => n.name).sort(), ["localcli-head", "localcli-worker-1", "localcli-worker-2"]);
  assert.ok(s.nodes.every((n: any) => n.alive));
});

test("exec runs on this machine and passes the exit code through; rsync copies here", async () => {
  const ok = await c.cli(["exec", "echo hello-from-head"]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /hello-from-head/);
  const bad = await c.cli(["exec", "exit 7"]);
  assert.equal(bad.code, 7);
  const src = path.join(c.home, "payload.txt");
  fs.writeFileSync(src, "payload");
  const dst = path.join(c.home, "copied", "payload.txt");
  const up = await c.cli(["rsync-up", src, dst]);
  assert.equal(up.code, 0, up.stderr);
  assert.equal(fs.readFileSync(dst, "utf8"), "payload");
  const back = path.join(c.home, "back.txt");
  const down = await c.cli(["rsync-down", dst, back]);
  assert.equal(down.code, 0, down.stderr);
  assert.equal(fs.readFileSync(back, "utf8"), "payload");
});

test("down --workers-only keeps the head; the head shows the workers as gone at once", async () => {
  const workerPids = c.state().nodes.filter((n: any) => n.kind === "worker").map((n: any) => n.pid);
  const r = await c.cli(["down", "--workers-only", c.configPath]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /workers removed, the head keeps running/);
  for (const pid of workerPids) assert.equal(pidAlive(pid), false, "worker agent is gone");
  const s = JSON.parse((await c.cli(["status", "--json"])).stdout);
  assert.deepEqual(s.nodes.filter((n: any) => n.alive).map((n: any) => n.name), ["localcli-head"]);
  // up brings them back
  const again = await c.cli(["up", c.configPath]);
  assert.equal(again.code, 0, again.stderr);
  const s2 = JSON.parse((await c.cli(["status", "--json"])).stdout);
  assert.equal(s2.nodes.filter((n: any) => n.alive).length, 3);
});

test("down stops every agent and removes shared memory; a second down says it is already down", async () => {
  const pids = c.state().nodes.map((n: any) => n.pid);
  const r = await c.cli(["down", c.configPath]);
  assert.equal(r.code, 0, r.stderr);
  for (const pid of pids) assert.equal(pidAlive(pid), false, `agent ${pid} is gone`);
  assert.deepEqual(fs.readdirSync("/dev/shm").filter((f) => f.startsWith("tray-localcli-")), []);
  const again = await c.cli(["down", c.configPath]);
  assert.equal(again.code, 0);
  assert.match(again.stdout, /already down/);
});
