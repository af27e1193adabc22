// tray's single-node benchmarks: Ray's microbenchmark metrics measured by a job on a fresh
// local cluster, plus `tray up` to ready and `tray submit` to the first log line.
import { startLocalCluster } from "../lib/tray-cluster.mjs";

export const metrics = [
  "single_client_tasks_sync", "single_client_tasks_async", "1_1_actor_calls_sync", "1_1_actor_calls_async",
  "n_n_actor_calls_async", "single_client_put_calls", "single_client_get_calls", "single_client_put_gigabytes",
  "single_client_wait_1k_refs", "single_client_tasks_and_get_batch", "up_to_ready_s", "submit_to_first_log_ms",
];

export async function run({ only } = {}) {
  const c = await startLocalCluster();
  try {
    const jobMetrics = only ? only.filter((m) => m !== "up_to_ready_s" && m !== "submit_to_first_log_ms") : null;
    const out = [];
    if (!jobMetrics || jobMetrics.length) {
      const { metrics: m } = await c.submit("bench/jobs/microbenchmark.ts", jobMetrics ? ["--only", jobMetrics.join(",")] : []);
      out.push(...m);
    }
    if (!only || only.includes("submit_to_first_log_ms")) {
      // The first submit of a bundle uploads it; time a warm one too, as users mostly see.
      await c.firstLogMs();
      out.push({ metric: "submit_to_first_log_ms", value: await c.firstLogMs(), unit: "ms" });
    }
    if (!only || only.includes("up_to_ready_s")) out.push({ metric: "up_to_ready_s", value: c.upSeconds, unit: "s" });
    return out;
  } finally {
    await c.down();
  }
}
