// Multi-node benchmarks as a tray job (run on a cluster of a head and two worker nodes):
//   --what pg        placement_group_create_removal: create a group, wait until ready, remove it
//   --what transfer  cross_node_transfer_gigabytes: a 100 MB object made on one worker node, read on the other
//   --what many      many_tasks_3_nodes_per_s: 100,000 tasks SPREAD over the 3 nodes (results checked)
// Prints one JSON metric line each.
import { remote, get, nodes, placementGroup, removePlacementGroup, getRuntimeContext } from "tray";
import type { ObjectRef } from "tray";

const MB100 = 100 * 1000 * 1000;
const make = remote((n: number) => new Uint8Array(n).fill(7));
const len = remote((x: Uint8Array) => x.length);
const read = remote(async (refs: ObjectRef<Uint8Array>[]) => {
  const t0 = performance.now();
  const v = await get(refs[0]!);
  const ms = performance.now() - t0;
  if (v.length !== MB100 || v[12345] !== 7 || v[MB100 - 1] !== 7) throw new Error("the transferred object is wrong");
  return { ms, node: getRuntimeContext().nodeId };
});
const noop = remote((x: number) => x);

function flag(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
}

export default async function main(args: string[]) {
  const what = flag(args, "--what", "pg,transfer,many").split(",");
  const seconds = Number(flag(args, "--seconds", "3"));
  const ns = (await nodes()).filter((n) => n.alive);
  const workers = ns.filter((n) => !n.isHead);
  if (what.includes("pg")) {
    // warm up, then as many create → ready → remove cycles as fit in the time
    for (let i = 0; i < 5; i++) {
      const pg = placementGroup([{ CPU: 0.01 }]);
      await pg.ready();
      await removePlacementGroup(pg);
    }
    let n = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < seconds * 1000) {
      const pg = placementGroup([{ CPU: 0.01 }]);
      await pg.ready();
      await removePlacementGroup(pg);
      n++;
    }
    console.log(JSON.stringify({ metric: "placement_group_create_removal", value: n / ((performance.now() - t0) / 1000), unit: "groups/s" }));
  }
  if (what.includes("transfer")) {
    if (workers.length < 2) throw new Error("transfer needs two worker nodes");
    const [a, b] = workers;
    const rates: number[] = [];
    // Steady state, like the other microbenchmarks: the first two pulls into a node are warm-up
    // (its store has no warm file of this size yet, processes and JIT are cold); the median of
    // the next nine is reported (of five, one slow pull on this noisy machine moved the median
    // by 10-20%). TRAY_BENCH_SAMPLES=1 prints every rate to stderr.
    const WARMUP = 2;
    for (let rep = 0; rep < WARMUP + 9; rep++) {
      const ref = make.options({ schedulingStrategy: { nodeId: a!.nodeId } }).remote(MB100);
      // made and sealed on node A (this reads it there, with no transfer)
      if ((await get(len.options({ schedulingStrategy: { nodeId: a!.nodeId } }).remote(ref))) !== MB100) throw new Error("bad length");
      const r = await get(read.options({ schedulingStrategy: { nodeId: b!.nodeId } }).remote([ref]));
      if (r.node !== b!.nodeId) throw new Error("the reader ran on the wrong node");
      rates.push(MB100 / 1e9 / (r.ms / 1000));
    }
    if (process.env.TRAY_BENCH_SAMPLES) console.error(`cross_node_transfer_gigabytes samples (${WARMUP} warm-up first): ${rates.map((x) => x.toFixed(2)).join(" ")}`);
    const timed = rates.slice(WARMUP).sort((x, y) => x - y);
    console.log(JSON.stringify({ metric: "cross_node_transfer_gigabytes", value: timed[Math.floor(timed.length / 2)], unit: "GB/s" }));
  }
  if (what.includes("many")) {
    const n = Number(flag(args, "--tasks", "100000"));
    const t0 = performance.now();
    const refs: ObjectRef<number>[] = new Array(n);
    const spread = noop.options({ schedulingStrategy: "SPREAD" });
    for (let i = 0; i < n; i++) refs[i] = spread.remote(i);
    let sum = 0;
    for (let i = 0; i < n; i += 20_000) for (const v of await get(refs.slice(i, i + 20_000))) sum += v;
    if (sum !== (n * (n - 1)) / 2) throw new Error(`sum of results ${sum} != ${(n * (n - 1)) / 2}`);
    console.log(JSON.stringify({ metric: "many_tasks_3_nodes_per_s", value: n / ((performance.now() - t0) / 1000), unit: "tasks/s" }));
  }
}
