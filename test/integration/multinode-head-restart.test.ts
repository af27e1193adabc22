// kill -9 the head agent of a 3-node loopback cluster, then `tray up` again: the node agents
// rejoin by themselves, job history survives, the job that was running is FAILED with a reason,
// and new jobs run across all nodes again.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { localClusterYaml, TestCluster, waitFor } from "../helpers/cluster.js";

process.env.TRAY_HEARTBEAT_MS = "200";
process.env.TRAY_NODE_TIMEOUT_MS = "1500";

const c = new TestCluster("mnhead", localClusterYaml("mnhead", { workers: { worker: { resources: { CPU: 1 }, count: 2 } } }));
after(() => c.down());

const statusJson = async () => JSON.parse((await c.cli(["status", "--json"])).stdout.trim().split("\n")[0]!);

test("kill -9 the head, tray up again: nodes reconnect, history is kept, the running job is FAILED with a reason", async () => {
  await c.up();
  const workers = (c.state().nodes as any[]).filter((n) => n.kind === "worker");
  const ok = await c.submit(`export default async function main() { console.log("first job done"); }`);
  assert.equal(ok.code, 0, ok.stderr);
  const child = c.spawnCli(["submit", writeJob()]);
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  const exited = new Promise<number>((res) => child.on("exit", (x) => res(x ?? 1)));
  await waitFor(() => /RUNNING/.test(out) || undefined, 30_000, "the long job to run");
  const oldHead = c.headPid();
  process.kill(oldHead, "SIGKILL");
  assert.notEqual(await exited, 0, "tray submit of a job whose head died does not report success");

  await c.up();
  assert.notEqual(c.headPid(), oldHead);
  // the node agents that outlived the head rejoin by themselves (same processes, same ids)
  const s = await waitFor(async () => {
    const st = await statusJson();
    const alive = st.nodes.filter((n: any) => n.alive);
    return alive.length === 3 ? st : undefined;
  }, 20_000, "both node agents to rejoin the new head");
  for (const w of workers) assert.ok(s.nodes.some((n: any) => n.nodeId === w.id && n.alive), `${w.name} rejoined`);
  for (const w of workers) assert.doesNotThrow(() => process.kill(w.pid, 0), `${w.name} is the same process`);
  assert.equal((c.state().nodes as any[]).filter((n) => n.kind === "worker").length, 2);

  const list = await c.cli(["job", "list", "--json"]);
  assert.equal(list.code, 0, list.stderr);
  const jobs = JSON.parse(list.stdout) as any[];
  assert.equal(jobs.length, 2);
  assert.ok(jobs.some((j) => j.status === "SUCCEEDED"));
  const failed = jobs.find((j) => j.status === "FAILED");
  assert.ok(failed, JSON.stringify(jobs));
  assert.match(failed.error, /head agent stopped while the job was running/);

  const r = await c.submit(`
    import { remote, get, getRuntimeContext } from "tray";
    const where = remote(async () => { await new Promise(r => setTimeout(r, 50)); return getRuntimeContext().nodeId; });
    export default async function main() {
      const ids = await get(Array.from({ length: 9 }, () => where.options({ schedulingStrategy: "SPREAD" }).remote()));
      console.log(JSON.stringify([...new Set(ids)].sort()));
    }`);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const used = JSON.parse(r.stdout.trim().split("\n").pop()!);
  assert.deepEqual(used, (c.state().nodes as any[]).map((n) => n.id).sort());
});

import fs from "node:fs";
import path from "node:path";
function writeJob(): string {
  const f = path.join(c.home, "long.ts");
  fs.writeFileSync(f, `
    import { remote, get } from "tray";
    const slow = remote(async () => { await new Promise(r => setTimeout(r, 60_000)); return 1; });
    export default async function main() {
      const r = slow.remote();
      console.log("RUNNING");
      await get(r);
    }`);
  return f;
}
