// 1,000,000 no-op tasks queued at once on one node: they all complete (results checked in
// the job) and the agent's peak memory (VmHWM of the head agent) stays bounded.
import fs from "node:fs";
import { join } from "node:path";
import { startLocalCluster } from "../lib/tray-cluster.mjs";

export const metrics = ["queued_1m_tasks_agent_peak_mb", "queued_1m_tasks_per_s"];

function headPid(home) {
  for (const name of fs.readdirSync(join(home, "clusters"))) {
    const s = JSON.parse(fs.readFileSync(join(home, "clusters", name, "state.json"), "utf8"));
    return s.nodes.find((n) => n.kind === "head").pid;
  }
}

function peakMb(pid) {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

export async function run() {
  const c = await startLocalCluster();
  try {
    const pid = headPid(c.home);
    const { metrics: m } = await c.submit("bench/jobs/queue-1m.ts", [String(Number(process.env.TRAY_BENCH_QUEUE ?? 1_000_000))]);
    return [...m.filter((x) => x.metric === "queued_1m_tasks_per_s"), { metric: "queued_1m_tasks_agent_peak_mb", value: peakMb(pid), unit: "MB" }];
  } finally {
    await c.down();
  }
}
