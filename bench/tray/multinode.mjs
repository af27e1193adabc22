// Multi-node figures on a local cluster of three agents (a head and two worker nodes, each
// with its own store and workers): placement groups created and removed per second, a 100 MB
// object pulled from one node to another, and 100,000 tasks spread over the three nodes with
// the head agent's CPU share meanwhile (utime+stime from /proc/<pid>/stat over wall time).
import fs from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { startLocalCluster } from "../lib/tray-cluster.mjs";

export const metrics = ["placement_group_create_removal", "cross_node_transfer_gigabytes", "many_tasks_3_nodes_per_s", "head_cpu_percent_3_nodes_100k_tasks"];

const YAML = `cluster_name: bench-multinode
provider:
  type: local
available_node_types:
  head:
    resources: { CPU: 1 }
    node_config: {}
  worker:
    resources: { CPU: 1 }
    node_config: {}
    min_workers: 2
    max_workers: 2
head_node_type: head
`;

function headPid(home) {
  const s = JSON.parse(fs.readFileSync(join(home, "clusters", "bench-multinode", "state.json"), "utf8"));
  return s.nodes.find((n) => n.kind === "head").pid;
}

/** CPU seconds (user + system) a process has used. */
function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (100 Hz)
}

export async function run({ only } = {}) {
  const want = (m) => !only || only.includes(m) || only.includes("multinode");
  const dir = fs.mkdtempSync(join(os.tmpdir(), "tray-bench-multinode-"));
  const config = join(dir, "multinode.yaml");
  fs.writeFileSync(config, YAML);
  const c = await startLocalCluster({ config });
  const out = [];
  try {
    const what = [want("placement_group_create_removal") && "pg", want("cross_node_transfer_gigabytes") && "transfer"].filter(Boolean);
    if (what.length) out.push(...(await c.submit("bench/jobs/multinode.ts", ["--what", what.join(",")])).metrics);
    if (want("many_tasks_3_nodes_per_s") || want("head_cpu_percent_3_nodes_100k_tasks")) {
      const pid = headPid(c.home);
      const n = String(Number(process.env.TRAY_BENCH_MANY ?? 100_000));
      const cpu0 = cpuSeconds(pid);
      const t0 = performance.now();
      const { metrics: m } = await c.submit("bench/jobs/multinode.ts", ["--what", "many", "--tasks", n]);
      const wall = (performance.now() - t0) / 1000;
      const cpu = cpuSeconds(pid) - cpu0;
      out.push(...m, { metric: "head_cpu_percent_3_nodes_100k_tasks", value: (100 * cpu) / wall, unit: "%" });
    }
    return out;
  } finally {
    await c.down();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
