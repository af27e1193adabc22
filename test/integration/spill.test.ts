// Spilling: a store of 50 MB holding 10 × 10 MB objects spills some to disk; every object is
// still readable (by get and as a task argument) with its exact content, and spilled files
// are removed once their objects are freed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { TestCluster } from "../helpers/cluster.js";
import { okJson } from "../helpers/runtime.js";

const c = new TestCluster(
  "spill",
  `cluster_name: spill
provider:
  type: local
available_node_types:
  head:
    resources: { CPU: 2 }
    node_config: {}
head_node_type: head
object_store_memory: 50000000
`,
);
before(() => c.up());
after(() => c.down());

test("10 × 10 MB objects in a 50 MB store: some are spilled, all read back intact, spill files go when freed", async () => {
  const r = await c.submit(`
    import { remote, put, get, wait, nodes } from "tray";
    const make = remote((i: number) => { const b = Buffer.alloc(10_000_000, i); b.writeUInt32LE(i * 7919, 5_000_000); return b; });
    const check = remote((b: Buffer, i: number) => b.length === 10_000_000 && b[0] === i && b[9_999_999] === i && b.readUInt32LE(5_000_000) === i * 7919);
    export default async function main() {
      const refs = [];
      for (let i = 0; i < 10; i++) {
        if (i % 2) {
          const b = Buffer.alloc(10_000_000, i);
          b.writeUInt32LE(i * 7919, 5_000_000);
          refs.push(put(b));
        } else refs.push(make.remote(i));
      }
      // every object made (the tasks may finish in any order on two CPUs) before looking
      await wait(refs, { numReturns: refs.length });
      const during = (await nodes())[0].store;
      const byGet = [];
      for (let i = 0; i < 10; i++) {
        const b = await get(refs[i]) as Buffer;
        byGet.push(b.length === 10_000_000 && b[0] === i && b[9_999_999] === i && b.readUInt32LE(5_000_000) === i * 7919);
      }
      const byTask = await get(refs.map((ref, i) => check.remote(ref, i)));
      const after = (await nodes())[0].store;
      console.log(JSON.stringify({ during, byGet, byTask, after, spillDir: process.env.TRAY_SPILL_DIR }));
    }`);
  const o = okJson(r);
  assert.equal(o.during.capacity, 50_000_000);
  assert.ok(o.during.spilledBytes >= 50_000_000, `at least half was spilled: ${JSON.stringify(o.during)}`);
  assert.ok(o.during.spillCount >= 5);
  assert.ok(o.during.used <= 50_000_000, `the store stays within its capacity: ${JSON.stringify(o.during)}`);
  assert.deepEqual(o.byGet, Array(10).fill(true), "get() reads every object, spilled or not");
  assert.deepEqual(o.byTask, Array(10).fill(true), "tasks read every object, spilled or not");
  assert.ok(o.after.used <= 50_000_000);

  // Once the job is over nothing holds them: the spill files are deleted.
  const spillDir = o.spillDir as string;
  let left: string[] = [];
  for (let i = 0; i < 100; i++) {
    left = fs.readdirSync(spillDir);
    if (left.length === 0) break;
    await new Promise((res) => setTimeout(res, 50));
  }
  assert.deepEqual(left, [], `spill files left in ${spillDir}`);
  const s = JSON.parse((await c.cli(["status", "--json"])).stdout).nodes[0].store;
  assert.equal(s.spilledBytes, 0);
  assert.equal(s.used, 0);
  assert.ok(path.isAbsolute(spillDir));
});

test("tray status shows the spilled bytes while a job holds them", async () => {
  const child = c.spawnCli(["submit", writeJob(`
    import { put } from "tray";
    export default async function main() {
      const keep = Array.from({ length: 8 }, (_, i) => put(Buffer.alloc(10_000_000, i)));
      console.log("holding " + keep.length);
      await new Promise((r) => setTimeout(r, 60_000));
    }`)]);
  try {
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    for (let i = 0; i < 400 && !out.includes("holding 8"); i++) await new Promise((r) => setTimeout(r, 50));
    assert.match(out, /holding 8/);
    const st = JSON.parse((await c.cli(["status", "--json"])).stdout);
    const store = st.nodes[0].store;
    assert.ok(store.spilledBytes >= 30_000_000, JSON.stringify(store));
    const text = (await c.cli(["status"])).stdout;
    assert.match(text, /MiB spilled/);
    const job = st.jobs.find((j: any) => j.status === "RUNNING");
    assert.ok(job, "the job is running");
    assert.equal((await c.cli(["job", "stop", job.id])).code, 0);
  } finally {
    child.kill();
  }
});

function writeJob(src: string): string {
  const f = path.join(c.home, `hold-${Date.now()}.ts`);
  fs.writeFileSync(f, src);
  return f;
}
