// Resources: CPU, memory and custom resources are reserved per task; a task waits until its
// resources are free; a task that can never fit fails with InfeasibleTaskError naming its
// demand; clusterResources/availableResources; getRuntimeContext in driver, task and actor.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { TestCluster } from "../helpers/cluster.js";
import { jobIdOf, okJson } from "../helpers/runtime.js";

const MEM = 4_000_000_000;
const c = new TestCluster(
  "res",
  `cluster_name: res
provider:
  type: local
available_node_types:
  head:
    resources: { CPU: 2, memory: ${MEM}, custom: 1 }
    node_config: {}
head_node_type: head
`,
);
before(() => c.up());
after(() => c.down());

test("two tasks needing {custom: 1} on a node with custom: 1 run one after the other", async () => {
  const r = await c.submit(`
    import { remote, get, availableResources } from "tray";
    const hold = remote(async (ms: number) => {
      const start = Date.now();
      const avail = await availableResources();
      await new Promise((r) => setTimeout(r, ms));
      return { start, end: Date.now(), customDuring: avail.custom };
    }, { resources: { custom: 1 }, numCpus: 0 });
    export default async function main() {
      const [a, b] = await get([hold.remote(300), hold.remote(300)]);
      const after = await availableResources();
      console.log(JSON.stringify({ disjoint: a.end <= b.start || b.end <= a.start, during: [a.customDuring, b.customDuring], after: after.custom }));
    }`);
  assert.deepEqual(okJson(r), { disjoint: true, during: [0, 0], after: 1 });
});

test("tasks whose resources fit together do run at the same time", async () => {
  // Control for the test above: two 1-CPU tasks on 2 CPUs meet each other (each waits for the other's marker).
  const r = await c.submit(`
    import { remote, get } from "tray";
    import fs from "node:fs";
    const meet = remote(async (dir: string, me: string, other: string) => {
      fs.writeFileSync(dir + "/" + me, "");
      const deadline = Date.now() + 15000;
      while (!fs.existsSync(dir + "/" + other)) {
        if (Date.now() > deadline) return false;
        await new Promise((r) => setTimeout(r, 20));
      }
      return true;
    });
    export default async function main() {
      const dir = fs.mkdtempSync("/tmp/tray-meet-");
      console.log(JSON.stringify(await get([meet.remote(dir, "a", "b"), meet.remote(dir, "b", "a")])));
    }`);
  assert.deepEqual(okJson(r), [true, true]);
});

test("memory is a resource: two tasks that each need 60% of the node's memory do not overlap", async () => {
  const r = await c.submit(`
    import { remote, get } from "tray";
    const hold = remote(async () => { const start = Date.now(); await new Promise((r) => setTimeout(r, 300)); return { start, end: Date.now() }; },
      { memory: ${MEM * 0.6}, numCpus: 0.5 });
    export default async function main() {
      const [a, b] = await get([hold.remote(), hold.remote()]);
      console.log(JSON.stringify({ disjoint: a.end <= b.start || b.end <= a.start }));
    }`);
  assert.deepEqual(okJson(r), { disjoint: true });
});

test("a task that can never fit fails with InfeasibleTaskError naming its demand, and other work goes on", async () => {
  const r = await c.submit(`
    import { remote, get, InfeasibleTaskError } from "tray";
    const f = remote(() => 1);
    export default async function main() {
      const out: any = {};
      const demands = [["cpu", { numCpus: 3 }], ["custom", { resources: { custom: 2 } }], ["gpu", { numGpus: 1 }], ["other", { resources: { tpu: 1 } }]] as const;
      const refs = demands.map(([, o]) => f.options(o as any).remote());
      for (let i = 0; i < refs.length; i++) {
        const k = demands[i][0];
        try { await get(refs[i]); out[k] = "ran"; }
        catch (e: any) { out[k] = { name: e.name, inst: e instanceof InfeasibleTaskError, message: e.message }; }
      }
      out.still = await get(f.remote());
      console.log(JSON.stringify(out));
    }`);
  const o = okJson(r);
  for (const k of ["cpu", "custom", "gpu", "other"]) {
    assert.equal(o[k].name, "InfeasibleTaskError", k);
    assert.equal(o[k].inst, true, k);
  }
  assert.match(o.cpu.message, /needs \{CPU: 3\}/);
  assert.match(o.custom.message, /needs \{CPU: 1, custom: 2\}/);
  assert.match(o.gpu.message, /GPU: 1/);
  assert.match(o.other.message, /tpu: 1/);
  assert.match(o.cpu.message, /no node of the cluster can ever provide it/);
  assert.equal(o.still, 1);
});

test("an actor that can never be placed: its calls reject with ActorDiedError naming the demand", async () => {
  const r = await c.submit(`
    import { remote, get, put } from "tray";
    const Big = remote(class Big { constructor(_data: Uint8Array) {} hi() { return 1; } }, { resources: { custom: 5 } });
    export default async function main() {
      const a = Big.remote(put(new Uint8Array(500_000)));
      try { await get(a.hi.remote()); console.log(JSON.stringify({ ran: true })); }
      catch (e: any) { console.log(JSON.stringify({ name: e.name, message: e.message })); }
    }`);
  const o = okJson(r);
  assert.equal(o.name, "ActorDiedError");
  assert.match(o.message, /custom: 5/);
  // its constructor argument was released with it (it stayed in the store forever); the
  // driver's own reference goes when its connection closes, a moment after the job ends
  let store: any;
  for (let i = 0; i < 50; i++) {
    store = JSON.parse((await c.cli(["status", "--json"])).stdout).nodes[0].store;
    if (store.used === 0) break;
    await new Promise((res) => setTimeout(res, 100));
  }
  assert.equal(store.used, 0, JSON.stringify(store));
});

test("clusterResources and availableResources report the node's totals and what is in use", async () => {
  const r = await c.submit(`
    import { remote, get, clusterResources, availableResources, nodes } from "tray";
    const probe = remote(async () => availableResources(), { resources: { custom: 1 }, numCpus: 1 });
    export default async function main() {
      const total = await clusterResources();
      const idle = await availableResources();
      const busy = await get(probe.remote());
      const ns = await nodes();
      console.log(JSON.stringify({ total, idle, busy, nodes: ns.length, alive: ns[0].alive, head: ns[0].isHead }));
    }`);
  const o = okJson(r);
  assert.equal(o.total.CPU, 2);
  assert.equal(o.total.custom, 1);
  assert.equal(o.total.memory, MEM);
  assert.equal(o.idle.CPU, 2, "the driver holds no CPU");
  assert.equal(o.idle.custom, 1);
  assert.equal(o.busy.CPU, 1, "a running 1-CPU task leaves 1");
  assert.equal(o.busy.custom, 0);
  assert.deepEqual([o.nodes, o.alive, o.head], [1, true, true]);
});

test("getRuntimeContext in the driver, a task and an actor", async () => {
  const r = await c.submit(`
    import { remote, get, getRuntimeContext, nodes } from "tray";
    const inTask = remote(() => getRuntimeContext());
    const Ctx = remote(class Ctx { ctx() { return getRuntimeContext(); } });
    export default async function main() {
      const d = getRuntimeContext();
      const t = await get(inTask.remote());
      const a = Ctx.remote();
      const ac = await get(a.ctx.remote());
      const nodeId = (await nodes())[0].nodeId;
      console.log(JSON.stringify({ d, t, ac, nodeId }));
    }`, [], ["--namespace", "team-a"]);
  const o = okJson(r);
  const jobId = jobIdOf(r);
  for (const [where, ctx] of [["driver", o.d], ["task", o.t], ["actor", o.ac]] as const) {
    assert.equal(ctx.jobId, jobId, `${where} jobId`);
    assert.equal(ctx.nodeId, o.nodeId, `${where} nodeId`);
    assert.equal(ctx.namespace, "team-a", `${where} namespace`);
    assert.deepEqual(ctx.gpuIds, [], `${where} gpuIds`);
    assert.ok(ctx.workerId, `${where} workerId`);
  }
  assert.equal(o.d.taskId, undefined, "the driver runs no task");
  assert.ok(o.t.taskId, "a task knows its id");
  assert.equal(o.t.actorId, undefined);
  assert.ok(o.ac.actorId, "an actor method knows its actor");
  assert.ok(o.ac.taskId, "and its call id");
  assert.notEqual(o.t.workerId, o.d.workerId);
  assert.notEqual(o.ac.workerId, o.t.workerId, "an actor has its own worker");
});
