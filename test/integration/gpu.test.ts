// GPUs: detected from nvidia-smi (a fake one on the PATH `tray up` runs with, printing what
// the real one prints); a GPU task's worker sees exactly its GPUs in CUDA_VISIBLE_DEVICES and
// getRuntimeContext().gpuIds agrees; concurrent tasks get different GPUs; fractions pack.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { TestCluster } from "../helpers/cluster.js";
import { okJson } from "../helpers/runtime.js";

const c = new TestCluster(
  "gpu",
  `cluster_name: gpu
provider:
  type: local
available_node_types:
  head:
    resources: { CPU: 4 }
    node_config: {}
head_node_type: head
`,
);
const bin = path.join(c.home, "fakebin");

before(async () => {
  fs.mkdirSync(bin);
  // What `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits`
  // prints on a 3-GPU host.
  fs.writeFileSync(
    path.join(bin, "nvidia-smi"),
    `#!/bin/sh
case "$*" in
  *--query-gpu=index,uuid,name,memory.total*) printf '0, GPU-a1b2c3d4-0000-1111-2222-333344445555, NVIDIA A100-SXM4-40GB, 40960\\n1, GPU-e5f6a7b8-0000-1111-2222-333344445555, NVIDIA A100-SXM4-40GB, 40960\\n2, GPU-c9d0e1f2-0000-1111-2222-333344445555, NVIDIA A100-SXM4-40GB, 40960\\n' ;;
  *) echo "unexpected arguments: $*" >&2; exit 2 ;;
esac
`,
    { mode: 0o755 },
  );
  // The agent inherits the environment of `tray up`: the fake nvidia-smi first on PATH, and a
  // CUDA_VISIBLE_DEVICES naming two of the three GPUs, one by UUID prefix and one by index (as
  // a host limited to them would have).
  const r = await c.cli(["up", c.configPath], { env: { PATH: `${bin}:${process.env.PATH}`, CUDA_VISIBLE_DEVICES: "GPU-a1b2c3d4,1" } });
  assert.equal(r.code, 0, r.stderr);
});
after(() => c.down());

// A task that waits until `n` tasks of its group have checked in (so they provably overlap).
const MEET = `
  import fs from "node:fs";
  async function meet(dir: string, n: number) {
    fs.writeFileSync(dir + "/" + process.pid + "-" + Math.random(), "");
    const deadline = Date.now() + 20000;
    while (fs.readdirSync(dir).length < n) {
      if (Date.now() > deadline) throw new Error("the tasks did not run at the same time");
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  function gpuView() {
    return { cvd: process.env.CUDA_VISIBLE_DEVICES ?? null, order: process.env.CUDA_DEVICE_ORDER ?? null, ids: getRuntimeContext().gpuIds };
  }`;

test("the cluster reports the GPUs nvidia-smi lists", async () => {
  const r = await c.cli(["status", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const node = JSON.parse(r.stdout).nodes[0];
  assert.equal(node.resources.GPU, 2);
  assert.deepEqual(
    node.gpus.map((g: any) => [g.index, g.name, g.memoryMiB]),
    [[0, "NVIDIA A100-SXM4-40GB", 40960], [1, "NVIDIA A100-SXM4-40GB", 40960]],
  );
  assert.deepEqual(node.gpus.map((g: any) => g.uuid), ["GPU-a1b2c3d4-0000-1111-2222-333344445555", "GPU-e5f6a7b8-0000-1111-2222-333344445555"]);
  const j = await c.submit(`
    import { clusterResources } from "tray";
    export default async function main() { console.log(JSON.stringify(await clusterResources())); }`);
  assert.equal(okJson(j).GPU, 2);
});

test("a numGpus: 1 task sees exactly one GPU, and getRuntimeContext().gpuIds agrees", async () => {
  const r = await c.submit(`
    import { remote, get, getRuntimeContext } from "tray";
    ${MEET}
    const one = remote(() => gpuView(), { numGpus: 1 });
    const none = remote(() => gpuView());
    export default async function main() {
      console.log(JSON.stringify({ one: await get(one.remote()), none: await get(none.remote()) }));
    }`);
  const o = okJson(r);
  assert.match(o.one.cvd, /^[01]$/, "exactly one GPU id");
  assert.deepEqual(o.one.ids, [Number(o.one.cvd)]);
  assert.equal(o.one.order, "PCI_BUS_ID", "CUDA numbers the GPUs as nvidia-smi does");
  assert.deepEqual(o.none.ids, []);
  assert.ok(o.none.cvd === "" || o.none.cvd === null, `a task without GPUs sees none (got ${o.none.cvd})`);
});

test("two concurrent numGpus: 1 tasks get different GPUs; a numGpus: 2 task gets both", async () => {
  const r = await c.submit(`
    import { remote, get, getRuntimeContext } from "tray";
    ${MEET}
    const one = remote(async (dir: string) => { await meet(dir, 2); return gpuView(); }, { numGpus: 1 });
    const two = remote(() => gpuView(), { numGpus: 2 });
    export default async function main() {
      const dir = fs.mkdtempSync("/tmp/tray-gpu-");
      const [a, b] = await get([one.remote(dir), one.remote(dir)]);
      console.log(JSON.stringify({ a, b, two: await get(two.remote()) }));
    }`);
  const o = okJson(r);
  assert.deepEqual([o.a.cvd, o.b.cvd].sort(), ["0", "1"]);
  assert.deepEqual([...o.a.ids, ...o.b.ids].sort(), [0, 1]);
  assert.deepEqual(o.two.cvd.split(",").sort(), ["0", "1"]);
  assert.deepEqual([...o.two.ids].sort(), [0, 1]);
});

test("numGpus 0.5: two halves share one GPU while a whole-GPU task runs on the other", async () => {
  const r = await c.submit(`
    import { remote, get, getRuntimeContext, availableResources } from "tray";
    ${MEET}
    // The halves stay until the whole-GPU task has looked at the available resources.
    const half = remote(async (dir: string) => {
      await meet(dir, 3);
      const deadline = Date.now() + 20000;
      while (!fs.existsSync(dir + "/../measured-" + dir.split("/").pop()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      return gpuView();
    }, { numGpus: 0.5 });
    const whole = remote(async (dir: string) => {
      await meet(dir, 3);
      const avail = await availableResources();
      fs.writeFileSync(dir + "/../measured-" + dir.split("/").pop(), "");
      return { ...gpuView(), availGpu: avail.GPU };
    }, { numGpus: 1 });
    export default async function main() {
      const dir = fs.mkdtempSync("/tmp/tray-gpu-");
      const [h1, h2, w] = await get([half.remote(dir), half.remote(dir), whole.remote(dir)]);
      console.log(JSON.stringify({ h1, h2, w, after: (await availableResources()).GPU }));
    }`);
  const o = okJson(r);
  assert.equal(o.h1.cvd, o.h2.cvd, "the two halves are packed on one GPU");
  assert.match(o.h1.cvd, /^[01]$/);
  assert.deepEqual(o.h1.ids, [Number(o.h1.cvd)]);
  assert.notEqual(o.w.cvd, o.h1.cvd, "the whole GPU is the other one");
  assert.equal(o.w.availGpu, 0, "all GPU capacity is in use while the three run");
  assert.equal(o.after, 2, "and all of it comes back");
});

test("a GPU actor sees its GPU for its whole life", async () => {
  const r = await c.submit(`
    import { remote, get, getRuntimeContext } from "tray";
    ${MEET}
    const G = remote(class G { view() { return gpuView(); } }, { numGpus: 1 });
    export default async function main() {
      const a = G.remote();
      const v1 = await get(a.view.remote());
      const v2 = await get(a.view.remote());
      console.log(JSON.stringify({ v1, v2 }));
    }`);
  const o = okJson(r);
  assert.match(o.v1.cvd, /^[01]$/);
  assert.deepEqual(o.v1.ids, [Number(o.v1.cvd)]);
  assert.deepEqual(o.v2, o.v1);
});

test("on a local cluster the head alone offers this machine's GPUs; a worker type only where it names GPU", async () => {
  // Seen on a real 1-GPU H200: a head and a worker agent on one machine both detected the GPU,
  // the cluster said GPU: 2, and two numGpus: 1 tasks ran on the one device at once.
  const w = new TestCluster(
    "gpuw",
    `cluster_name: gpuw
provider:
  type: local
available_node_types:
  head:
    resources: { CPU: 1 }
    node_config: {}
  plain:
    resources: { CPU: 1 }
    node_config: {}
    min_workers: 1
    max_workers: 1
  gpuw:
    resources: { CPU: 1, GPU: 1 }
    node_config: {}
    min_workers: 1
    max_workers: 1
head_node_type: head
`,
  );
  try {
    const r = await w.cli(["up", w.configPath], { env: { PATH: `${bin}:${process.env.PATH}`, CUDA_VISIBLE_DEVICES: "0,1" } });
    assert.equal(r.code, 0, r.stderr);
    const s = await w.cli(["status", "--json"]);
    assert.equal(s.code, 0, s.stderr);
    const byType = Object.fromEntries(JSON.parse(s.stdout).nodes.map((n: any) => [n.nodeType, n]));
    assert.equal(byType.head.resources.GPU, 2, "the head detects both GPUs");
    assert.equal(byType.plain.resources.GPU ?? 0, 0, "a worker type that names no GPU gets none");
    assert.deepEqual(byType.plain.gpus ?? [], []);
    assert.equal(byType.gpuw.resources.GPU, 1, "a worker type that names GPU gets that many");
    assert.deepEqual(byType.gpuw.gpus.map((g: any) => g.index), [0]);
  } finally {
    await w.down();
  }
});
